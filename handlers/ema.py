"""Ignite's ``EMAHandler``, its update one multi-tensor kernel per iteration: for a GPU, where the handler's own update
launches two small kernels per tensor (about 40 per iteration for the chapter's generator) at ~2 ms per iteration.

    MultiTensorEMAHandler(generator, momentum=0.001, momentum_warmup=0.1, warmup_iters=3000).attach(trainer)

Everything but the arithmetic of the update is ``EMAHandler``'s: the average's copy of the model, the warm-up of the
momentum, the event, the buffers copied from the model. The update is torch's public EMA function
(``torch.optim.swa_utils.get_ema_multi_avg_fn``, one ``lerp`` over all parameters) instead of ``mul_`` and ``add_``
per tensor: the same average to the last bits or so (tested against ``EMAHandler``), not bit for bit. CPU runs keep
``EMAHandler`` itself, so their numbers stay what they were.

Ignite has no public hook for the update: its protected ``_update_ema_model(engine, name)`` is what ``attach``
registers (ignite 0.5.x), pinned by tests/handlers/test_ema.py.
"""

import torch
from ignite.engine import Engine
from ignite.handlers import EMAHandler
from torch.optim.swa_utils import get_ema_multi_avg_fn


class MultiTensorEMAHandler(EMAHandler):
    def _update_ema_model(self, engine: Engine, name: str) -> None:
        momentum = getattr(engine.state, name)
        averaged = list(self.ema_model.parameters())
        current = [parameter.detach() for parameter in self.model.parameters()]
        get_ema_multi_avg_fn(decay=1.0 - momentum)(averaged, current, None)
        for average_buffer, buffer in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            average_buffer.data = buffer.data  # EMAHandler's "copy": BatchNorm's statistics are the model's


def ema_handler_class(device: torch.device) -> type[EMAHandler]:
    return MultiTensorEMAHandler if device.type == "cuda" else EMAHandler
