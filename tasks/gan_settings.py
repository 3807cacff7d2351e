"""The settings every GAN task has, and the GAN's recipes: ``book`` (the chapter) and ``stable`` (the techniques the
ablation in ``docs/atari_gan.md`` chose). ``tasks.gan`` builds a run from them.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from engines.augment import check_augmentations
from engines.gan_losses import LOSSES
from engines.kernel_plan import check_kernel_plan_choice
from models.dcgan import D_NORMS
from runner.settings import (
    RunSettings,
    Schedule,
    in_open_unit_interval,
    keep_checkpoints_setting,
    non_negative,
    one_of,
    positive,
    setting,
)

EMA_WARMUP_START_DECAY = 0.9  # --ema-warmup: the average starts with a memory of about 10 iterations
# --recipe: book is the chapter (every technique off); stable is the set the ablation in docs/atari_gan.md chose.
RECIPES: dict[str, dict[str, Any]] = {
    "book": {},
    "stable": {
        "loss": "relativistic",
        "dis_lr": 4e-4,
        "gen_lr": 1e-4,
        "r1_weight": 1.0,
        "r1_every": 16,
        "ema_warmup": 3000,
    },
}


def augmentation_list(value: str) -> None:
    if value != "none":
        check_augmentations(value.split(","))


def probability(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError("must be in [0, 1]")


@dataclass(frozen=True)
class GanRunSettings(RunSettings):
    """The fields every GAN task has. A task subclasses it, redefining a field to change its default or check."""

    distributed: ClassVar[bool] = True  # --nproc-per-node
    retired: ClassVar[frozenset[str]] = frozenset({"gemm_weight_grads"})  # a CPU-vendor rule; --kernel-plan now

    # how long, how often
    max_iters: int = setting(
        50_000, "total iterations; a resumed run continues up to it", check=positive, resume="free"
    )
    log_every: int = setting(
        100, "iterations between metrics.jsonl records and report lines", check=positive, resume="free"
    )
    image_every: int = setting(
        1000, "iterations between sample sheets (PNG and TensorBoard)", check=positive, resume="free"
    )
    checkpoint_every: int = setting(
        1000, "iterations between checkpoints (one more at the end)", check=positive, resume="free"
    )
    keep_checkpoints: int = keep_checkpoints_setting()
    # data, model and optimizer
    batch_size: int = setting(16, "images per batch", check=positive)
    image_size: int = setting(64, "side of the square images", check=positive)
    latent_size: int = setting(100, "length of the generator's noise vector", check=positive)
    filters: int = setting(64, "filters of the first discriminator / last generator layer", check=positive)
    lr: float = setting(1e-4, "Adam learning rate of both networks (unless --dis-lr / --gen-lr)", check=positive)
    beta1: float = setting(0.5, "Adam beta1 of both networks", check=in_open_unit_interval)
    beta2: float = setting(0.999, "Adam beta2 of both networks", check=in_open_unit_interval)
    # the GAN's recipe (docs/atari_gan.md, "A stable recipe"): each technique alone, or --recipe for a measured set
    recipe: str = setting(
        "book",
        "book: the chapter's GAN; stable: the techniques below as the measurements chose them (flags override; "
        "--print-config shows them)",
        check=one_of(*RECIPES),
    )
    loss: str = setting("bce", "GAN loss: bce (the chapter), hinge, or relativistic (RpGAN)", check=one_of(*LOSSES))
    d_norm: str = setting(
        "batchnorm",
        "D's normalization: batchnorm (the chapter), spectral (spectral norm instead), spectral+batchnorm",
        check=one_of(*D_NORMS),
    )
    dis_lr: float = setting(0.0, "Adam learning rate of D (0: --lr); above G's, it is TTUR", check=non_negative)
    gen_lr: float = setting(0.0, "Adam learning rate of G (0: --lr)", check=non_negative)
    lr_decay_from: int = setting(
        0,
        "iteration after which both learning rates fall linearly to 0 at --lr-decay-to (0: constant, as the "
        "chapter); a function of the iteration alone, so a resume that adds it branches a run exactly",
        check=non_negative,
        resume="free",
    )
    lr_decay_to: int = setting(
        0, "iteration at which --lr-decay-from's rates reach 0 (0: --max-iters)", check=non_negative, resume="free"
    )
    r1_weight: float = setting(
        0.0, "gamma of the R1 penalty on real frames, gamma/2 E||grad D(real)||^2 (0: none)", check=non_negative
    )
    r1_every: int = setting(16, "iterations between R1 penalties, each weighted by it (lazy R1)", check=positive)
    augment: str = setting(
        "none",
        "differentiable augmentation of what D sees, real and fake: none, or a comma-separated list of translation, "
        "color, cutout",
        check=augmentation_list,
    )
    augment_p: float = setting(
        1.0, "probability of each augmentation per image (with --ada-target: where it starts)", check=probability
    )
    ada_target: float = setting(
        0.0,
        "adaptive strength (ADA): raise --augment-p while E[sign D(real)] is above this, lower it below (0: fixed)",
        check=in_open_unit_interval,
    )
    ada_speed: int = setting(
        100_000, "real frames over which the adaptive strength can move from 0 to 1", check=positive
    )
    # the fast path (docs/speed.md): each switch on by default where it keeps quality, each can be turned off
    precision: str = setting(
        "auto",
        "autocast: auto (bf16 where supported, fp16 on older GPUs), bf16, fp16 (CUDA) or fp32 (off)",
        check=one_of("auto", "bf16", "fp16", "fp32"),
        resume="free",
    )
    channels_last: bool = setting(True, "channels-last memory layout for both networks", resume="free")
    freeze_discriminator: bool = setting(
        True, "skip D's weight gradients in the generator step (the book computes and discards them)", resume="free"
    )
    joint_d_pass: bool = setting(
        True, "D's real and fake passes as one batched pass (each keeps its own BatchNorm statistics)", resume="free"
    )
    fused_adam: bool = setting(True, "fused Adam kernels (else foreach)", resume="free")
    kernel_plan: str = setting(
        "auto",
        "CPU convolution kernels: auto (each pass of each layer timed at start, the library's kernel against one "
        "matrix product, the faster kept, and cached for this machine: later runs take the cached plan; a resume "
        "keeps the checkpoint's; book with --deterministic), measure (time them again, replacing the cached plan), "
        "book (the library's), or a kernel_plan.json or a run directory holding one (to repeat that run exactly)",
        check=check_kernel_plan_choice,
        resume="free",
    )
    producer: str = setting(
        "auto",
        "make batches in a background thread: on, off, or auto (on when training leaves a CPU core free)",
        check=one_of("auto", "on", "off"),
        resume="free",
    )
    keep_heap: bool = setting(
        True, "keep freed memory for reuse (glibc): far fewer page faults per step on CPU", resume="free"
    )
    compile: bool = setting(False, "torch.compile both networks (meant for CUDA; slower on CPU)", resume="free")
    compile_mode: str = setting(
        "default",
        "torch.compile's mode with --compile: default, reduce-overhead (CUDA graphs) or max-autotune",
        check=one_of("default", "reduce-overhead", "max-autotune"),
        resume="free",
    )
    # what the sample sheets and the quality measure also see: an exponential moving average of G's weights
    ema_decay: float = setting(
        0.999,
        "weight of the past in the generator's exponential moving average (EMA), updated each iteration; 0: none",
        check=in_open_unit_interval,
    )
    ema_warmup: int = setting(
        0,
        f"iterations over which the average's memory grows from {EMA_WARMUP_START_DECAY} to --ema-decay (Ignite's "
        "warm-up; 0: none)",
        check=non_negative,
    )
    shown_statistics: str = setting(
        "own",
        "BatchNorm statistics the generators are shown with in sheets and Atari-FID: own (recomputed for the weights "
        "shown, engines/batch_stats.py) or running (training's; the average's are G's)",
        check=one_of("own", "running"),
    )
    # several processes (runner.distributed): --batch-size is the global batch, split evenly over them
    nproc_per_node: int = setting(
        1, "training processes on this machine (DDP via ignite.distributed; gloo on CPU, nccl on CUDA)", check=positive
    )

    @property
    def schedule(self) -> Schedule:
        return Schedule("iterations", self.max_iters)

    def step_every(self) -> tuple[int, int]:
        """(d_every, g_every): D and G trained on every batch, unless a task says otherwise."""
        return 1, 1

    @classmethod
    def recipe_defaults(cls, explicit: dict[str, Any]) -> dict[str, Any]:
        """The settings of ``--recipe`` (applied under the flags the user gave)."""
        return dict(RECIPES.get(explicit.get("recipe", "book"), {}))  # an unknown one: the field's check says so

    def lr_decay_end(self) -> int:
        """The iteration at which ``--lr-decay-from``'s rates reach 0."""
        return self.lr_decay_to or self.max_iters

    def validate(self) -> None:
        if self.ema_warmup and not self.ema_decay:
            raise ValueError(f"--ema-warmup {self.ema_warmup}: there is no moving average to warm up (--ema-decay 0)")
        if self.lr_decay_to and not self.lr_decay_from:
            raise ValueError(f"--lr-decay-to {self.lr_decay_to}: say where the decay starts (--lr-decay-from)")
        if self.lr_decay_from and self.lr_decay_from >= self.lr_decay_end():
            end = f"--lr-decay-to {self.lr_decay_to}" if self.lr_decay_to else f"--max-iters {self.max_iters}"
            raise ValueError(f"--lr-decay-from {self.lr_decay_from}: must be below {end}")
        if self.ada_target and self.augment == "none":
            raise ValueError(f"--ada-target {self.ada_target}: choose what to augment (--augment)")


def technique_summary(settings: GanRunSettings) -> str:
    """The techniques on, in words; empty for the chapter's GAN."""
    on = []
    if settings.loss != "bce":
        on.append(f"{settings.loss} loss")
    if settings.d_norm != "batchnorm":
        on.append(f"{settings.d_norm} normalization in D")
    if settings.dis_lr or settings.gen_lr:
        on.append(f"learning rates D {settings.dis_lr or settings.lr:g}, G {settings.gen_lr or settings.lr:g}")
    if settings.lr_decay_from:
        on.append(f"learning rates falling to 0 from iteration {settings.lr_decay_from} to {settings.lr_decay_end()}")
    if settings.r1_weight:
        on.append(f"R1 {settings.r1_weight:g} every {settings.r1_every} iterations")
    if settings.augment != "none":
        strength = f"adaptive, target {settings.ada_target:g}" if settings.ada_target else f"p {settings.augment_p:g}"
        on.append(f"augmentation {settings.augment} ({strength})")
    if settings.ema_warmup:
        on.append(f"EMA warm-up {settings.ema_warmup} iterations")
    return ", ".join(on)
