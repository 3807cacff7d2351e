"""What the process functions need to run on several processes (``ignite.distributed``); no-ops with one.

loss = mean_over_ranks(loss.detach())     # every rank reports (and judges) the same number
copy_buffers_from_rank_zero(model)        # before an evaluation the ranks share: one set of BatchNorm statistics
"""

import ignite.distributed as idist
import torch
from torch import nn


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    ranks = idist.get_world_size()
    return idist.all_reduce(value) / ranks if ranks > 1 else value


def copy_buffers_from_rank_zero(module: nn.Module) -> None:
    """Each rank's running statistics moved with its own batches; DDP trains with rank 0's (it broadcasts them
    before each forward), so overwriting the others' changes no training number."""
    if idist.get_world_size() > 1:
        for buffer in module.buffers():
            buffer.copy_(idist.broadcast(buffer, src=0))
