"""Convolutions whose passes each run the kernel a plan chose: the library's (oneDNN on CPU) or one matrix product.

Each pass of a convolution is one matrix product over (images x positions) and a rearrangement of a feature map:

- **gather** (unfold, then a product): every output position's receptive field is one row of a patch matrix, times
  the weight. A convolution's forward; a transposed convolution's input gradient.
- **scatter** (a product, then fold): every input position's row times the weight is its window's contribution,
  summed into place (col2im). A transposed convolution's forward; a convolution's input gradient.
- **the weight gradient**: the small side's rows against the other side's windows (``weight_grad``).

Where a feature map is small, oneDNN's kernels have few positions to split over the cores and run far below the
machine's matrix-product rate; where it is large, its kernels win. Which way a layer goes depends on the CPU, the
precision and the shapes, so nothing here decides it: ``engines.kernel_plan`` times both kernels of each pass on the
machine, at the run's shapes, and ``use_kernels`` switches a model's layers to the plan (their class, as
``torch.nn.utils.parametrize`` does: parameters, state_dict keys and hooks stay the same).

The products accumulate in fp32 (in the precision computed in, as oneDNN's kernels do), so results agree with the
library's to rounding. Autocast behaves as for the layers replaced: input, weight and bias are cast to its dtype.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LIBRARY, PRODUCT = "library", "product"
KERNELS = (LIBRARY, PRODUCT)
PASSES = ("forward", "input_grad", "weight_grad")


@dataclass(frozen=True)
class LayerKernels:
    """The kernel of each pass of one convolution: ``LIBRARY`` (torch's, oneDNN on CPU) or ``PRODUCT`` (one
    matrix product)."""

    forward: str = LIBRARY
    input_grad: str = LIBRARY
    weight_grad: str = LIBRARY

    def all_library(self) -> bool:
        return (self.forward, self.input_grad, self.weight_grad) == (LIBRARY, LIBRARY, LIBRARY)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


BOOK = LayerKernels()


def output_padding(layer: nn.Module) -> list[int]:
    return list(getattr(layer, "output_padding", (0, 0)))


def convolve(layer: nn.Module, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The library's forward of ``layer`` with the given tensors."""
    transposed = isinstance(layer, nn.ConvTranspose2d)
    return torch.ops.aten.convolution(
        inputs, weight, bias, layer.stride, layer.padding, layer.dilation, transposed, output_padding(layer), 1
    )


def library_backward(layer: nn.Module, grad_output: Tensor, inputs: Tensor, weight: Tensor, mask: list[bool]):
    """The library's input, weight and bias gradients of ``layer`` (those ``mask`` asks for; the others None)."""
    return torch.ops.aten.convolution_backward(
        grad_output,
        inputs,
        weight,
        None,
        layer.stride,
        layer.padding,
        layer.dilation,
        isinstance(layer, nn.ConvTranspose2d),
        output_padding(layer),
        1,
        mask,
    )


def patches(images: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """``(N, C, H, W)`` -> ``(N * OH * OW, kh * kw * C)``: each output position's receptive field, channels last."""
    padded = F.pad(images, (padding[1], padding[1], padding[0], padding[0]))
    padded = padded.contiguous(memory_format=torch.channels_last)  # (N, H, W, C) in memory: C runs innermost
    n, c, h, w = padded.shape
    out_h, out_w = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
    s_n, s_c, s_h, s_w = padded.stride()
    windows = padded.as_strided(
        (n, out_h, out_w, kernel[0], kernel[1], c), (s_n, stride[0] * s_h, stride[1] * s_w, s_h, s_w, s_c)
    )
    return windows.reshape(n * out_h * out_w, kernel[0] * kernel[1] * c)


def rows(feature_map: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> ``(N * H * W, C)`` (a view for a channels-last map)."""
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])


def channels_last(tensor: Tensor) -> bool:
    """Laid out channels-last, and not also contiguous (as a map of one position, or of one channel, is both)."""
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def in_layout_of(result: Tensor, *operands: Tensor) -> Tensor:
    """``result`` in the layout the library's kernel gives: channels-last where an operand is."""
    layout = torch.channels_last if any(channels_last(t) for t in operands) else torch.contiguous_format
    return result.contiguous(memory_format=layout)


def gather(feature_map: Tensor, weight: Tensor, stride, padding) -> Tensor:
    """The convolution of ``feature_map`` ``(N, B, H, W)`` with ``weight`` ``(A, B, kh, kw)``: ``(N, A, OH, OW)``."""
    a, b, kh, kw = weight.shape
    out_h = (feature_map.shape[2] + 2 * padding[0] - kh) // stride[0] + 1
    out_w = (feature_map.shape[3] + 2 * padding[1] - kw) // stride[1] + 1
    matrix = weight.permute(2, 3, 1, 0).reshape(kh * kw * b, a)  # rows in the patches' (kh, kw, B) order
    product = patches(feature_map, (kh, kw), stride, padding).matmul(matrix)
    result = product.view(feature_map.shape[0], out_h, out_w, a).permute(0, 3, 1, 2)  # channels-last strides
    return in_layout_of(result, feature_map, weight)


def scatter(small: Tensor, weight: Tensor, size: tuple[int, int], stride, padding) -> Tensor:
    """The transposed convolution of ``small`` ``(N, A, h, w)`` with ``weight`` ``(A, B, kh, kw)`` into a map of
    ``size``: ``(N, B, *size)``. Each input position's window is one row of the product; fold sums the overlaps."""
    a, b, kh, kw = weight.shape
    n, positions = small.shape[0], small.shape[2] * small.shape[3]
    if positions == 1 and tuple(padding) == (0, 0) and tuple(size) == (kh, kw):  # one window: it is the map
        window = rows(small).matmul(weight.permute(0, 2, 3, 1).reshape(a, kh * kw * b))  # a view if channels-last
        return in_layout_of(window.view(n, kh, kw, b).permute(0, 3, 1, 2), small, weight)
    columns = rows(small).matmul(weight.reshape(a, b * kh * kw))  # (N * h * w, B * kh * kw), (B, kh, kw) order
    columns = columns.view(n, positions, b * kh * kw).transpose(1, 2)
    result = F.fold(columns, size, (kh, kw), padding=padding, stride=stride)
    return in_layout_of(result, small, weight)


def forward_product(layer: nn.Module, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if isinstance(layer, nn.ConvTranspose2d):
        h, w = inputs.shape[2:]
        sides = zip((h, w), layer.stride, layer.padding, weight.shape[2:], strict=True)
        size = tuple((side - 1) * stride - 2 * pad + k for side, stride, pad, k in sides)
        result = scatter(inputs, weight, size, layer.stride, layer.padding)
    else:
        result = gather(inputs, weight, layer.stride, layer.padding)
    return result if bias is None else result + bias.view(1, -1, 1, 1)


def input_grad_product(layer: nn.Module, grad_output: Tensor, inputs: Tensor, weight: Tensor) -> Tensor:
    """The gradient of the layer's input: a convolution's is a scatter of the output gradient, a transposed
    convolution's a gather (the same weight; no flip: one is the other's gradient)."""
    if isinstance(layer, nn.ConvTranspose2d):
        return in_layout_of(gather(grad_output, weight, layer.stride, layer.padding), inputs, weight)
    return in_layout_of(scatter(grad_output, weight, inputs.shape[2:], layer.stride, layer.padding), inputs, weight)


def weight_grad(layer: nn.Module, inputs: Tensor, grad_output: Tensor) -> Tensor:
    """The gradient of ``layer.weight`` (shape ``(A, B, kh, kw)``, laid out channels-last) as one matrix product.

    A convolution's output position (oh, ow) sees the input window at (s*oh, s*ow) of the padded input. A transposed
    convolution is the same relation read the other way: its *input* position (ih, iw) sees the window at
    (s*ih, s*iw) of its padded *output*, so its small side is the input and the windows come from the output grad.
    """
    kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
    if isinstance(layer, nn.ConvTranspose2d):
        small, windows = inputs, patches(grad_output, kernel, stride, padding)
    else:
        small, windows = grad_output, patches(inputs, kernel, stride, padding)
    grad = rows(small).t().matmul(windows)  # (A, kh * kw * B)
    a, b = layer.weight.shape[:2]
    return grad.view(a, kernel[0], kernel[1], b).permute(0, 3, 1, 2)


def planned_forward(layer: nn.Module, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if layer.kernels.forward == PRODUCT:
        return forward_product(layer, inputs, weight, bias)
    return convolve(layer, inputs, weight, bias)


class _PlannedConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, bias: Tensor | None, layer: nn.Module) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.layer = layer
        return planned_forward(layer, inputs, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        inputs, weight = ctx.saved_tensors
        layer, kernels = ctx.layer, ctx.layer.kernels
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        by_library = [need_input and kernels.input_grad == LIBRARY, need_weight and kernels.weight_grad == LIBRARY]
        grad_input = grad_weight = None
        if any(by_library):  # one call for both where both are the library's: they share its work
            grad_input, grad_weight, _ = library_backward(layer, grad_output, inputs, weight, [*by_library, False])
        if need_input and kernels.input_grad == PRODUCT:
            grad_input = input_grad_product(layer, grad_output, inputs, weight)
        if need_weight and kernels.weight_grad == PRODUCT:
            grad_weight = weight_grad(layer, inputs, grad_output)
        grad_bias = grad_output.sum((0, 2, 3)) if need_bias else None
        return grad_input, grad_weight, grad_bias, None


def takes_the_plan(layer: nn.Module, inputs: Tensor, output_size: list[int] | None) -> bool:
    """A batch of images, a plan that differs from the library's, and not float64 under autocast (which the
    library keeps in float64)."""
    if layer.kernels.all_library() or inputs.dim() != 4 or output_size is not None:
        return False
    autocast = torch.is_autocast_enabled(inputs.device.type)
    return not (autocast and torch.float64 in (inputs.dtype, layer.weight.dtype))


def planned_layer_forward(layer: nn.Module, inputs: Tensor, output_size: list[int] | None = None) -> Tensor:
    if not takes_the_plan(layer, inputs, output_size):
        return layer._library_forward(inputs, output_size)
    weight, bias = layer.weight, layer.bias
    device_type = inputs.device.type
    if torch.is_autocast_enabled(device_type):  # what autocast does for a convolution: compute in its dtype
        dtype = torch.get_autocast_dtype(device_type)
        inputs, weight = inputs.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(device_type, enabled=False):
        return _PlannedConvolution.apply(inputs, weight, bias, layer)


class PlannedConv2d(nn.Conv2d):
    kernels: LayerKernels = BOOK

    def _library_forward(self, inputs: Tensor, output_size: None = None) -> Tensor:
        return nn.Conv2d.forward(self, inputs)

    forward = planned_layer_forward


class PlannedConvTranspose2d(nn.ConvTranspose2d):
    kernels: LayerKernels = BOOK

    def _library_forward(self, inputs: Tensor, output_size: list[int] | None = None) -> Tensor:
        return nn.ConvTranspose2d.forward(self, inputs, output_size)

    forward = planned_layer_forward


PLANNED = {nn.Conv2d: PlannedConv2d, nn.ConvTranspose2d: PlannedConvTranspose2d}


def qualifies(layer: nn.Module) -> bool:
    """A plain 2-D (transposed) convolution: one group, no dilation, zero padding mode, no output padding."""
    return type(layer) in (*PLANNED, *PLANNED.values()) and (
        layer.groups == 1
        and tuple(layer.dilation) == (1, 1)
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
        and tuple(output_padding(layer)) == (0, 0)
    )


def planned_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``model``'s convolutions a plan can choose kernels for, by their names in ``model``."""
    return {name: layer for name, layer in model.named_modules() if qualifies(layer)}


def use_kernels(model: nn.Module, plan: Mapping[str, LayerKernels]) -> int:
    """Switch ``model``'s qualifying convolutions to the kernels ``plan`` names for them (``BOOK`` for a layer it
    leaves out); returns how many layers take a matrix product in some pass."""
    switched = 0
    for name, layer in planned_layers(model).items():
        layer.__class__ = PLANNED.get(type(layer), type(layer))
        layer.kernels = plan.get(name, BOOK)
        switched += not layer.kernels.all_library()
    return switched
