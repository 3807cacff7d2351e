"""The Atari GAN task (Deep RL Hands-On, chapter 3): its settings, its data and its quality measure (Atari-FID).

What both GAN tasks share (the engine, the fast path, the sample sheets) is in ``tasks.gan``; the run itself is the
standard run (``tasks.standard_run``). ``scripts/atari_gan.py`` hands its command line to ``runner.cli.launch``.
"""

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ignite.distributed as idist
import torch

from datasets.atari import DEFAULT_GAMES, FrameStream, check_games, spaced_frames
from datasets.prefetch import Prefetched
from datasets.workers import WorkerFrames, worker_count
from engines.gan import create_fid_evaluator, fid_batches
from handlers.collapse import CollapseWatch
from handlers.evaluation import PeriodicEvaluation, keep_best
from models.dcgan import Discriminator, Generator, stride2_stages
from runner.checkpoint_files import ResumePoint, find_checkpoint
from runner.cli import launch, launch_tool
from runner.device import resolve_device
from runner.distributed import rank_batch_size, rank_seed, saved_ranks
from runner.errors import UserError, say
from runner.files import load_torch_file
from runner.machine import usable_cores
from runner.settings import (
    Settings,
    at_least_two,
    from_saved,
    non_negative,
    one_of,
    positive,
    required,
    setting,
)
from tasks.atari_fid import LazyFeatures, load_frame_classifier
from tasks.gan import GanTask, free_cores, shown_view, use_producer
from tasks.gan_generate import (
    INTERPOLATE_HELP,
    WEIGHTS_HELP,
    check_interpolate,
    checked_out,
    chosen_generator,
    generated,
    sheet_noise,
    write_sheet,
)
from tasks.gan_settings import GanRunSettings
from tasks.parts import Attached, RunContext, Scoring

EVAL_SEED_OFFSET = 1_000_003  # FID's real frames and noise: other episodes than the training stream's
FID_BATCH = 256  # frames per forward pass of an evaluation
AUTO_WORKERS_AT_MOST = 4  # what --producer-workers auto starts at most: 2 feed an H100 at the chapter's sizes


def auto_or_count(value: str) -> None:
    if value != "auto" and not (value.isdigit() and int(value) <= 64):
        raise ValueError("must be auto or a number of processes from 0 to 64")


def zero_or_above_one(value: float) -> None:
    if value != 0 and not value > 1:
        raise ValueError("must be 0 (off) or above 1")


def image_side(value: int) -> None:
    stride2_stages(value)  # raises ValueError with the reason


@dataclass(frozen=True)
class AtariGanSettings(GanRunSettings):
    seed: int = setting(0, "seeds the weights, the noise, the emulators and the agent's actions", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/atari_gan-<date>-<time>)", resume="free")
    # data: the chapter's three games, 16 frames of 64x64 per batch
    batch_size: int = setting(16, "frames per batch", check=positive)
    image_size: int = setting(64, "side of the square frames, a power of two >= 8", check=image_side)
    games: tuple[str, ...] = setting(DEFAULT_GAMES, "ALE games the random agent plays", check=check_games)
    producer_workers: str = setting(
        "auto",
        "processes making the frames, taken in turn (0: this process makes them); auto: several on a GPU or with "
        "free cores, else 0; the frames depend on (seed, N), so a resume keeps its checkpoint's N",
        check=auto_or_count,
        resume="free",
    )
    # quality: Atari-FID against real frames held apart from the training stream
    eval_every: int = setting(
        1000, "iterations between Atari-FID evaluations (0: none)", check=non_negative, resume="free"
    )
    fid_samples: int = setting(512, "real and generated frames per Atari-FID evaluation", check=at_least_two)
    patience: int = setting(
        0, "stop after this many evaluations without a better FID (0: never)", check=non_negative, resume="free"
    )
    collapse_factor: float = setting(
        3.0,
        "say so (a line, a metrics.jsonl record) when an evaluation's FID rises above this many times the best so "
        "far; training goes on (0: never)",
        check=zero_or_above_one,
        resume="free",
    )

    def check_ranks(self, ranks: int) -> None:
        """With several processes each evaluates its share of the FID samples (``runner.distributed``)."""
        if self.eval_every and self.fid_samples < 2 * ranks:
            raise UserError(f"--fid-samples {self.fid_samples}: at least 2 per process ({ranks} processes)")


class AtariGan(GanTask):
    def __init__(self, settings: AtariGanSettings):
        super().__init__(settings)
        # With a moving average of G, its FID judges the run: best checkpoint, --patience, a sweep's value and pruning.
        metric = "fid_ema" if settings.ema_decay else "fid"
        self.scoring = Scoring(metric, higher_is_better=False, record_prefix="", report_digits=None)

    def make_stream(self, device: torch.device, resume: ResumePoint | None) -> FrameStream | Prefetched | WorkerFrames:
        return make_stream(self.settings, device, producer_workers(self.settings, device, resume))

    def make_networks(self) -> tuple[Generator, Discriminator]:
        return make_networks(self.settings)

    def attach_handlers(self, context: RunContext) -> Attached:
        super().attach_handlers(context)
        if isinstance(context.data, WorkerFrames):  # a dead producer's one line says how to go on
            context.data.resume_hint = f"the run's checkpoints are kept: resume with --resume {context.run.path}"
        if not self.settings.eval_every:
            return Attached()
        return self.attach_fid_evaluation(context)

    def attach_fid_evaluation(self, context: RunContext) -> Attached:
        """Atari-FID every ``eval_every`` iterations, the best-FID weights kept, early stopping on FID if asked."""
        settings, device, built = self.settings, context.device, context.built
        # The classifier and the real frames take seconds to make: a run pays for them at its first evaluation.
        features = LazyFeatures(lambda: load_frame_classifier(settings.image_size, say=say), device)
        eval_seed = settings.seed + EVAL_SEED_OFFSET
        real = functools.partial(
            spaced_frames, settings.games, settings.fid_samples, settings.image_size, seed=eval_seed
        )
        noise_source = torch.Generator().manual_seed(eval_seed)
        noise = torch.randn(settings.fid_samples, settings.latent_size, 1, 1, generator=noise_source).to(device)
        generators = {name.replace("fake", "fid"): generator for name, generator in built.generators().items()}
        evaluator = create_fid_evaluator(generators, features, real, noise, FID_BATCH, device, built.shown)
        batches = fid_batches(settings.fid_samples, FID_BATCH)
        PeriodicEvaluation(
            evaluator,
            batches,
            settings.eval_every,
            context.metrics_log,
            context.tb_logger,
            with_records=lambda: {"fid_classifier": features.name, "fid_statistics": settings.shown_statistics},
        ).attach(context.trainer)
        models = {"generator": built.gan.generator, "discriminator": built.gan.discriminator}
        if built.ema_generator is not None:
            models["generator_ema"] = built.ema_generator
        state = keep_best(
            context.trainer,
            evaluator,
            models,
            context.run.checkpoints,
            self.scoring.score,
            settings.patience,
            prefix="best_fid",
        )
        if settings.collapse_factor:
            best = state["best_fid_checkpointer"]
            watch = CollapseWatch(
                self.scoring.metric,
                settings.collapse_factor,
                settings.eval_every,
                context.metrics_log,
                lambda: best.last_checkpoint,
                say,
            )
            state["collapse_watch"] = watch.attach(evaluator, context.trainer)
        return Attached(evaluator, state)

    def stop_reason(self) -> str:
        return f"stopped early (no better FID in {self.settings.patience} evaluations)"


def make_networks(settings: AtariGanSettings) -> tuple[Generator, Discriminator]:
    """The chapter's pair (ReLU in D, biases), D normalised as ``--d-norm`` says."""
    generator = Generator(settings.image_size, 3, settings.filters, settings.latent_size)
    return generator, Discriminator(settings.image_size, 3, settings.filters, norm=settings.d_norm)


def make_stream(
    settings: AtariGanSettings, device: torch.device, workers: int = 0
) -> FrameStream | Prefetched | WorkerFrames:
    """The live frame stream (this process's share of each batch, from its own seed): made by ``workers``
    processes, or here, in a background thread if ``--producer`` says so."""
    batch_size, seed = rank_batch_size(settings.batch_size), rank_seed(settings.seed)
    on_gpu = device.type == "cuda"  # uint8 frames pinned, copied as they are and converted there
    if workers:
        return WorkerFrames(settings.games, batch_size, settings.image_size, seed, workers, on_gpu, uint8=on_gpu)
    stream = FrameStream(settings.games, batch_size, settings.image_size, seed, uint8=on_gpu)
    if use_producer(settings, device):
        return Prefetched(stream, depth=2, pin_memory=on_gpu)
    return stream


def producer_workers(settings: AtariGanSettings, device: torch.device, resume: ResumePoint | None) -> int:
    """How many processes make the frames. A resume keeps its checkpoint's number (0 and 1 make the same frames);
    ``auto`` on a fresh run: up to ``AUTO_WORKERS_AT_MOST`` on a GPU (a core each, one left for the training
    process) or on the cores the training step leaves free, none otherwise."""
    asked = settings.producer_workers
    saved = saved_producer_workers(resume)
    if asked == "auto" and saved is not None:
        return saved
    if asked == "auto":
        free = usable_cores() // idist.get_nproc_per_node() - 1 if device.type == "cuda" else free_cores()
        workers = min(AUTO_WORKERS_AT_MOST, free) if settings.producer == "auto" else 0
        return workers if workers >= 2 else 0  # one process makes the frames a background thread makes
    if saved is not None and max(int(asked), 1) != max(saved, 1):
        raise UserError(
            f"{resume.path}'s frames come from {saved} producer worker(s): --producer-workers {asked} would change "
            f"them; resume with --producer-workers {saved} (or auto)"
        )
    return int(asked)


def saved_producer_workers(resume: ResumePoint | None) -> int | None:
    if resume is None:
        return None
    return worker_count(saved_ranks(resume.state["stream"])[0])


train = AtariGan.train


@dataclass(frozen=True)
class GenerateSettings(Settings):
    checkpoint: str = setting("", "a run directory of atari_gan.py, or one of its checkpoint files", check=required)
    weights: str = setting("auto", WEIGHTS_HELP, check=one_of("auto", "ema", "raw"))
    which: str = setting(
        "last", "last: the newest checkpoint's weights; best: the best Atari-FID's", check=one_of("last", "best")
    )
    n: int = setting(64, "frames on the sheet (with --interpolate: rows of K)", check=positive)
    interpolate: int = setting(0, INTERPOLATE_HELP, check=check_interpolate)
    seed: int = setting(0, "seeds the noise", check=non_negative)
    out: str = setting("generated.png", "PNG sheet to write")
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N")

    def validate(self) -> None:
        if not self.out.lower().endswith(".png"):
            raise ValueError(f"--out {self.out}: give a .png file name")


@dataclass
class Generated:
    exit_code: int
    images: torch.Tensor


def generate(settings: GenerateSettings) -> Generated:
    """A sheet of a trained Atari GAN's frames (``atari_gan.py generate``)."""
    device = resolve_device(settings.dev)
    out = checked_out(settings.out)
    checkpoint = find_checkpoint(settings.checkpoint, flag="--checkpoint")
    trained = from_saved(AtariGanSettings, checkpoint.settings, {}, source=str(checkpoint.path))
    models, source = checkpoint.state, checkpoint.path
    if settings.which == "best":
        source = newest_best(checkpoint.run_dir)
        models = load_torch_file(source, "best-FID file")
    make_generator = lambda: make_networks(trained)[0]  # noqa: E731
    generator, which = chosen_generator(models, settings.weights, make_generator, source, shown_view(trained))
    noise = sheet_noise(settings.n, settings.interpolate, trained.latent_size, settings.seed)
    images = generated(generator, noise, device)
    write_sheet(images, out, settings.interpolate)
    say(f"wrote {len(images)} frames of {which} ({source.name}) to {out}")
    return Generated(0, images)


def newest_best(run_dir: Path) -> Path:
    best = sorted(run_dir.glob("checkpoints/best_fid_*.pt"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    if not best:
        raise UserError(f"--which best: {run_dir} has no best_fid_*.pt (it was trained without --eval-every)")
    return best[-1]


GENERATE_DESCRIPTION = """Frames from a trained Atari GAN: a sheet, or rows interpolating between random noises.

python scripts/atari_gan.py generate --checkpoint runs/atari_gan-<time>                   # 64 frames, EMA weights
python scripts/atari_gan.py generate --checkpoint runs/atari_gan-<time> --which best --weights raw --out g.png
python scripts/atari_gan.py generate --checkpoint runs/atari_gan-<time> --interpolate 8 --n 64 --out walk.png
"""


def main(argv: Sequence[str] | None, description: str, prog: str = "atari_gan.py") -> None:
    """``atari_gan.py [training flags]`` trains, as it always has; ``atari_gan.py generate [flags]`` draws."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        launch_tool(GenerateSettings, generate, f"{prog} generate", GENERATE_DESCRIPTION, argv[1:])
    else:
        launch(AtariGanSettings, train, prog, description, argv)
