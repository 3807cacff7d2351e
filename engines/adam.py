"""Adam whose fused CPU kernel updates channels-last parameters in place instead of through copies.

PyTorch's fused Adam kernel works on contiguous memory: for a channels-last weight it makes contiguous copies of the
parameter, its gradient and both moment buffers, and copies the results back. On the Atari GAN at the chapter's
sizes (2 CPU cores) that made the two optimizer steps 7.9 ms per iteration instead of 3.2 (``docs/speed.md``).

Adam is elementwise: it does not care in which order the elements lie in memory, only that the parameter, its
gradient and its moments put each element at the same place. When they share their strides and cover their memory
densely (channels-last tensors, after ``Module.to(memory_format=torch.channels_last)``), each is handed to the
kernel as a 1-D view of that memory. The arithmetic, and every number, is the same as ``torch.optim.Adam``'s; the
checkpointed state is the same (the moments keep the parameters' layout).

    optimizer = LayoutFreeAdam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=True)
"""

import inspect

import torch

# Torch has no public point between gathering a step's tensors and handing them to the fused kernel: the protected
# ``Adam._init_group`` is that point. Its parameters are pinned here (the same from torch 2.4 to 2.14) and by
# tests/engines/test_adam.py; where a torch release changes them, this class is torch's Adam, copies included.
PINNED_INIT_GROUP = (
    "self", "group", "params_with_grad", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"
)  # fmt: skip
OWN_INIT_GROUP = tuple(inspect.signature(torch.optim.Adam._init_group).parameters) == PINNED_INIT_GROUP


def flat_view(tensor: torch.Tensor) -> torch.Tensor:
    """The memory of a dense tensor (no gaps, no overlaps) as one contiguous 1-D view, in memory order."""
    return tensor.as_strided((tensor.numel(),), (1,), tensor.storage_offset())


def is_dense(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last)


class LayoutFreeAdam(torch.optim.Adam):
    """``torch.optim.Adam``; with ``fused=True``, channels-last tensors reach the fused kernel without copies."""

    def _init_group(self, group, *tensor_lists):
        has_complex = super()._init_group(group, *tensor_lists)
        if not group["fused"] or not OWN_INIT_GROUP:
            return has_complex  # the foreach and for-loop paths handle any layout without copies
        params_with_grad, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, _ = tensor_lists
        lists = [params_with_grad, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if group["amsgrad"] else [])
        for index, param in enumerate(params_with_grad):
            tensors = [tensor_list[index] for tensor_list in lists]
            if param.is_contiguous() or not is_dense(param):
                continue  # contiguous already, or a layout the kernel's own copies must handle
            if all(tensor.stride() == param.stride() for tensor in tensors):  # same shape, strides: dense too
                for tensor_list, tensor in zip(lists, tensors, strict=True):
                    tensor_list[index] = flat_view(tensor)
        return has_complex

    def load_state_dict(self, state_dict: dict) -> None:
        """Also give loaded moments their parameter's layout: a checkpoint written with ``--no-channels-last`` and
        resumed with channels-last holds contiguous moments, which would send every step through the copies."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param, {})
                for name, value in state.items():
                    if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                        state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)
