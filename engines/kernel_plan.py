"""A kernel plan: for each convolution of a run and each of its passes, the kernel that is fastest on this machine,
timed at start at the run's shapes and precision, the way cuDNN's benchmark mode chooses.

The candidates of each pass (``engines.conv_kernels``) are the library's kernel (oneDNN on CPU) and one matrix
product (unfold or fold around ``mm``; the weight gradient as the small side's rows against the windows). Each is
timed on random tensors of the layer's shapes (its own seeded generator: planning draws from no shared RNG and
touches no weight or statistic), and checked against the library's result: a product that does not agree to the
precision's rounding is never chosen. A product is kept only where it beats the library by ``MARGIN``.

    plan = KernelPlan({"generator": G, "discriminator": D})
    plan.measure({"generator": noise, "discriminator": frames}, torch.bfloat16)
    plan.chosen["generator"]["main.0"]   # LayerKernels(forward='product', input_grad='library', ...)

It is part of the checkpoint (``state_dict``), so a resumed run computes with the kernels it began with, and its
``document()`` is what a run directory's ``kernel_plan.json`` holds and ``--kernel-plan FILE`` reads back.

A measured plan is also kept in the machine's cache (``datasets.cache_dir()/kernel_plans``), under a key of everything
its timings depend on: the CPU and its flags, the cores and threads, torch's version, the precision, every layer's
geometry and layout, the examples' shapes and the planner's thresholds. A later run with the same key takes it instead
of timing again (``--kernel-plan auto``), the way torch.compile's autotuning keeps its choices: start-up is seconds
shorter, and fresh runs on one machine compute with the same kernels, so they repeat each other exactly.
``--kernel-plan measure`` times the kernels again and replaces the cached plan (after the machine was busy, say).
"""

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from torch import Tensor, nn

from datasets import cache_dir
from engines.conv_kernels import (
    BOOK,
    KERNELS,
    LIBRARY,
    PASSES,
    PRODUCT,
    LayerKernels,
    convolve,
    forward_product,
    input_grad_product,
    library_backward,
    planned_layers,
    use_kernels,
    weight_grad,
)
from runner.errors import CannotWrite, UserError
from runner.files import write_atomically
from runner.machine import cpu_fields, usable_cores
from runner.rundir import RunLayout

FORMAT = 1
CPU_CLASS_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "bf16")  # what a kernel's speed depends on
TIMED_CALLS = 2  # after one warm-up call; the best is the kernel's speed (as a GEMM peak is measured)
LOSER = 2.0  # a product whose warm-up call took this many times the library's is not timed again
MARGIN = 0.05  # a product must be this much faster: ties and timing noise keep the library's kernel
MIN_SAVING_MS = 0.05  # and save this much per call: a smaller gain is within a busy machine's timing noise
MIN_FLOPS = 2**20  # a pass of fewer FLOPs takes microseconds either way: the library's, untimed (deterministic)
MAX_PATCH_ELEMENTS = 2**25  # a product whose patch matrix is larger costs more memory than it can save time
AGREEMENT = {torch.float32: 1e-3, torch.float64: 1e-9}  # largest difference, relative to the largest value
REDUCED_AGREEMENT = 5e-2  # bf16 and fp16 results round to 8 or 11 bits
CACHE_FOLDER = "kernel_plans"  # in datasets.cache_dir(): one file per key
MEASURED_FIELDS = ("machine", "precision", "seconds", "measured_at", "timings_ms")

Plan = dict[str, dict[str, LayerKernels]]  # network name -> layer name -> kernels


def conv_inputs(model: nn.Module, example: Tensor) -> dict[str, Tensor]:
    """The input of each planned convolution of ``model`` on ``example`` (in eval mode: no statistic moves)."""
    seen: dict[str, Tensor] = {}

    def keep_input(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple, _output: Tensor) -> None:  # None: the output stays as it is
            seen.setdefault(name, args[0].detach())

        return hook

    hooks = [layer.register_forward_hook(keep_input(name)) for name, layer in planned_layers(model).items()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return seen


def seconds_of(function: Callable[[], Tensor]) -> tuple[float, Tensor]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def best_seconds(function: Callable[[], Any], calls: int = TIMED_CALLS) -> float:
    """The best of ``calls`` timed calls (the caller has made the warm-up call)."""
    return min(seconds_of(function)[0] for _ in range(calls))


def agrees(product: Tensor, library: Tensor) -> bool:
    """The product's result equals the library's to the rounding of the precision computed in."""
    tolerance = AGREEMENT.get(library.dtype, REDUCED_AGREEMENT)
    scale = library.abs().max().float().clamp_min(1e-12)
    difference = (product.float() - library.float()).abs().max()
    return bool(difference <= tolerance * scale) and product.shape == library.shape


def pass_candidates(layer: nn.Module, x: Tensor, w: Tensor, b: Tensor | None, grad_out: Tensor) -> dict:
    """pass -> kernel -> a call computing it (the bias gradient goes with the weight gradient, as in a step)."""

    def library_grad(mask: list[bool], index: int) -> Callable[[], Tensor]:
        return lambda: library_backward(layer, grad_out, x, w, mask)[index]

    def product_weight_grad() -> Tensor:
        if b is not None:
            grad_out.sum((0, 2, 3))
        return weight_grad(layer, x, grad_out)

    def library_weight_grad() -> Tensor:
        if b is not None:
            grad_out.sum((0, 2, 3))
        return library_backward(layer, grad_out, x, w, [False, True, False])[1]

    return {
        "forward": {LIBRARY: lambda: convolve(layer, x, w, b), PRODUCT: lambda: forward_product(layer, x, w, b)},
        "input_grad": {
            LIBRARY: library_grad([True, False, False], 0),
            PRODUCT: lambda: input_grad_product(layer, grad_out, x, w),
        },
        "weight_grad": {LIBRARY: library_weight_grad, PRODUCT: product_weight_grad},
    }


def patch_matrix(layer: nn.Module, x: Tensor, out: Tensor) -> tuple[int, int, int]:
    """The products' sizes: rows (the positions of the side whose windows are gathered), columns (its window's
    values), and the other side's channels; every pass is ``2 * rows * columns * channels`` FLOPs."""
    kernel = layer.kernel_size[0] * layer.kernel_size[1]
    windowed, other = (x, out) if isinstance(layer, nn.ConvTranspose2d) else (out, x)
    return windowed.numel() // windowed.shape[1], other.shape[1] * kernel, windowed.shape[1]


def time_layer(layer: nn.Module, inputs: Tensor, dtype: torch.dtype, source: torch.Generator) -> dict[str, Any]:
    """For one layer at ``inputs``' shape: its FLOPs per pass, and for each pass {kernel: best milliseconds (None:
    not a candidate), "agrees": whether the product gave the library's result}; no passes where it is too small
    to time."""
    x = torch.empty_like(inputs, dtype=dtype).normal_(generator=source)  # empty_like keeps the layout
    w = layer.weight.detach().to(dtype)
    b = layer.bias.detach().to(dtype) if layer.bias is not None else None
    out = convolve(layer, x, w, b)
    grad_out = torch.empty_like(out).normal_(generator=source)
    rows, columns, channels = patch_matrix(layer, x, out)
    flops = 2 * rows * columns * channels
    timed: dict[str, Any] = {"shape": shape_of(x, out), "mflop": round(flops / 1e6, 3)}
    if flops < MIN_FLOPS:
        return timed
    fits = rows * columns <= MAX_PATCH_ELEMENTS
    for name, kernels in pass_candidates(layer, x, w, b, grad_out).items():
        library, product = kernels[LIBRARY], kernels[PRODUCT]
        library_first, reference = seconds_of(library)  # the warm-up calls, timed: a clear loser is not repeated
        product_first, result = seconds_of(product) if fits else (None, None)
        agreeing = fits and agrees(result, reference)
        contender = agreeing and product_first < LOSER * library_first
        product_seconds = best_seconds(product) if contender else product_first if agreeing else None
        timed[name] = {
            LIBRARY: in_ms(best_seconds(library)),
            PRODUCT: in_ms(product_seconds) if product_seconds is not None else None,
            "agrees": agreeing,
        }
    return timed


def in_ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


def choice(timed: Mapping[str, Any]) -> LayerKernels:
    """The product where it was faster by ``MARGIN`` and by ``MIN_SAVING_MS``; else (and where nothing was timed)
    the library's kernel."""

    def faster(name: str) -> str:
        if name not in timed or timed[name][PRODUCT] is None:
            return LIBRARY
        library, product = timed[name][LIBRARY], timed[name][PRODUCT]
        return PRODUCT if product < library * (1 - MARGIN) and library - product >= MIN_SAVING_MS else LIBRARY

    return LayerKernels(**{name: faster(name) for name in PASSES})


def shape_of(x: Tensor, out: Tensor) -> str:
    return f"{x.shape[1]}->{out.shape[1]}, {x.shape[-1]}x{x.shape[-1]}->{out.shape[-1]}x{out.shape[-1]}"


def machine() -> str:
    """The CPU a plan was measured on, as a reader compares machines: its model and the flags that decide kernels."""
    fields = cpu_fields()
    flags = [flag for flag in CPU_CLASS_FLAGS if flag in fields.get("flags", "").split()]
    return f"{fields.get('model name', 'unknown CPU')}, {usable_cores()} cores; flags: {' '.join(flags) or 'none'}"


def layer_signature(layer: nn.Module) -> list:
    """What a layer's kernels are timed on, besides its input: its kind, geometry, bias and weight layout."""
    transposed = isinstance(layer, nn.ConvTranspose2d)
    geometry = [layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation]
    extra = [layer.groups, layer.output_padding if transposed else None, layer.bias is not None]
    return ["transposed" if transposed else "convolution", *geometry, *extra, list(layer.weight.stride())]


def cache_key(networks: Mapping[str, nn.Module], examples: Mapping[str, Tensor], dtype: torch.dtype) -> dict:
    """Everything a measured plan depends on; two runs with equal keys would time the same kernels on the same work.
    As JSON gives it back (lists, not tuples), so that it equals the key a cached file holds."""
    key = {
        "format": FORMAT,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": str(dtype).removeprefix("torch."),
        "planner": [TIMED_CALLS, LOSER, MARGIN, MIN_SAVING_MS, MIN_FLOPS, MAX_PATCH_ELEMENTS],
        "networks": {
            network: {
                "example": [list(examples[network].shape), list(examples[network].stride())],
                "layers": {name: layer_signature(layer) for name, layer in planned_layers(model).items()},
            }
            for network, model in networks.items()
        },
    }
    return json.loads(json.dumps(key))


def cache_file(key: Mapping[str, Any]) -> Path:
    """The machine's cached plan for ``key`` (a file named by the key's digest; the file holds the key itself)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / CACHE_FOLDER / f"{digest}.json"


class KernelPlan:
    """The kernels of a run's networks: measured, read from a file, the library's (``book``), or a checkpoint's.
    ``chosen`` is None until one of those sets it; ``origin`` says how the plan was first made, ``source`` where
    this run took it from."""

    def __init__(self, networks: Mapping[str, nn.Module]):
        self.networks = dict(networks)
        self.chosen: Plan | None = None
        self.source = self.origin = ""
        self.measured: dict[str, Any] = {}  # what a measured plan was measured from, and how long it took

    def use(self, chosen: Plan, source: str) -> "KernelPlan":
        self.chosen = {  # every layer named: the library's where ``chosen`` leaves one out
            network: {name: chosen.get(network, {}).get(name, BOOK) for name in planned_layers(model)}
            for network, model in self.networks.items()
        }
        self.source = source
        self.origin = self.origin if source in ("checkpoint", "rank 0", "cache") else source
        for network, model in self.networks.items():
            use_kernels(model, self.chosen[network])
        return self

    def book(self) -> "KernelPlan":
        self.measured = {}
        return self.use({network: {} for network in self.networks}, "book")

    @torch.no_grad()
    def measure(self, examples: Mapping[str, Tensor], dtype: torch.dtype, seed: int = 0) -> "KernelPlan":
        """Time each pass of each convolution at the input ``examples`` give it, computing in ``dtype``."""
        started = time.perf_counter()
        source = torch.Generator().manual_seed(seed)
        chosen: Plan = {}
        timings: dict[str, dict[str, Any]] = {}
        for network, model in self.networks.items():
            layers = planned_layers(model)
            chosen[network], timings[network] = {}, {}
            for name, inputs in conv_inputs(model, examples[network]).items():
                timed = time_layer(layers[name], inputs, dtype, source)
                chosen[network][name] = choice(timed)
                timings[network][name] = timed
        self.measured = {
            "machine": machine(),
            "precision": str(dtype).removeprefix("torch."),
            "seconds": round(time.perf_counter() - started, 3),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "timings_ms": timings,
        }
        return self.use(chosen, "measured")

    def products(self) -> int:
        """How many passes take a matrix product."""
        chosen = [kernels for layers in (self.chosen or {}).values() for kernels in layers.values()]
        return sum(getattr(kernels, name) == PRODUCT for kernels in chosen for name in PASSES)

    def summary(self) -> str:
        passes = sum(len(layers) for layers in (self.chosen or {}).values()) * len(PASSES)
        line = f"kernel plan ({self.source}): {self.products()} of {passes} passes as one matrix product"
        if self.source == "measured":
            return f"{line}, measured in {self.measured['seconds']:.1f} s"
        if self.source == "cache":
            when = self.measured.get("measured_at", "earlier")
            return f"{line}, measured on this machine {when} (--kernel-plan measure times them again)"
        return line if self.origin in (self.source, "book") else f"{line} (it was {self.origin})"

    def document(self) -> dict[str, Any]:
        """What ``kernel_plan.json`` holds: the choice of every pass, and what it was measured from."""
        networks = {
            network: {name: kernels.as_dict() for name, kernels in layers.items()}
            for network, layers in (self.chosen or {}).items()
        }
        return {"format": FORMAT, "source": self.origin, "networks": networks, **self.measured}

    def write(self, path: Path) -> None:
        write_atomically(path, (json.dumps(self.document(), indent=1) + "\n").encode())

    def read(self, choice: str) -> "KernelPlan":
        """The plan a ``kernel_plan.json`` holds (``--kernel-plan FILE``), checked against this run's layers."""
        where = f"--kernel-plan {choice}"
        try:
            document = json.loads(plan_path(choice).read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{where}: not a readable kernel plan ({error})") from None
        self.measured = {}
        return self.use(self.checked(document, where), f"file {plan_path(choice)}")

    def cached(self, key: Mapping[str, Any]) -> "KernelPlan | None":
        """This machine's plan for ``key`` where its cache holds a sound one (anything else is measured again)."""
        try:
            document = json.loads(cache_file(key).read_text())
            if document.get("key") != key:
                return None
            self.load_state_dict(document, source="cache")
        except (OSError, ValueError, AttributeError, UserError):
            return None
        return self

    def keep(self, key: Mapping[str, Any]) -> None:
        """Put this measured plan in the machine's cache; a cache that cannot be written only costs the next run
        its measurement."""
        path = cache_file(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, (json.dumps({**self.document(), "key": key}, indent=1) + "\n").encode())
        except (OSError, CannotWrite):
            pass

    def timed_or_cached(self, examples: Mapping[str, Tensor], dtype: torch.dtype, again: bool) -> "KernelPlan":
        """The machine's cached plan for this work, unless ``again``; else one measured now and cached."""
        key = cache_key(self.networks, examples, dtype)
        if not again and self.cached(key) is not None:
            return self
        self.measure(examples, dtype)
        self.keep(key)
        return self

    def resolve(self, choice: str, examples: Callable[[], Mapping[str, Tensor]], dtype: torch.dtype) -> "KernelPlan":
        """``--kernel-plan``: ``book``, a file, ``measure`` (timed now), or ``auto``: the checkpoint's plan where
        one was loaded, else the machine's cached plan for this work, else one measured now. With several processes
        rank 0 decides and the others take its plan, so every rank computes with the same kernels."""
        if idist.get_rank() == 0:
            if choice == "book":
                self.book()
            elif choice == "measure" or (choice == "auto" and self.chosen is None):
                self.timed_or_cached(examples(), dtype, again=choice == "measure")
            elif choice != "auto":
                self.read(choice)
        if idist.get_world_size() > 1:
            document = idist.broadcast(json.dumps(self.document()) if idist.get_rank() == 0 else "", src=0)
            if idist.get_rank() != 0:
                self.load_state_dict(json.loads(document), source="rank 0")
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.document()

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        chosen = self.checked(state, f"the {source}'s kernel plan")
        self.origin = str(state.get("source", ""))
        self.measured = {key: state[key] for key in MEASURED_FIELDS if key in state}
        self.use(chosen, source)

    def checked(self, document: Any, where: str) -> Plan:
        """The plan in ``document``, refused in one line unless it names exactly this run's layers and passes with
        known kernels."""
        networks = document.get("networks") if isinstance(document, Mapping) else None
        if not isinstance(networks, Mapping) or document.get("format") != FORMAT:
            raise UserError(f"{where}: not a kernel plan of format {FORMAT} (a run directory's kernel_plan.json)")
        if set(networks) != set(self.networks):
            raise UserError(f"{where}: a plan for {', '.join(sorted(networks))}, not for {', '.join(self.networks)}")
        plan: Plan = {}
        for network, model in self.networks.items():
            expected, given = set(planned_layers(model)), set(networks[network])
            if expected != given:
                raise UserError(
                    f"{where}: its {network} has other layers than this run's ({len(given)} named, {len(expected)} "
                    f"here, e.g. {sorted(expected ^ given)[0]}); another size or model: use --kernel-plan auto"
                )
            plan[network] = {name: layer_kernels(networks[network][name], where) for name in sorted(given)}
        return plan


def layer_kernels(passes: Any, where: str) -> LayerKernels:
    if not isinstance(passes, Mapping) or set(passes) != set(PASSES) or not set(passes.values()) <= set(KERNELS):
        raise UserError(f"{where}: each layer needs {', '.join(PASSES)}, each one of {', '.join(KERNELS)}")
    return LayerKernels(**passes)


def plan_path(choice: str) -> Path:
    """The file ``--kernel-plan FILE`` names: a plan file, or a run directory's ``kernel_plan.json``."""
    path = Path(choice)
    return RunLayout(path).kernel_plan if path.is_dir() else path


def check_kernel_plan_choice(choice: str) -> None:
    if choice not in ("auto", "measure", "book") and not plan_path(choice).is_file():
        raise ValueError("must be auto, measure, book, or an existing kernel_plan.json (or a run directory with one)")
