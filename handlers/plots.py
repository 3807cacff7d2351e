"""PNG plots of runs' ``metrics.jsonl``: losses, evaluation scores and speed against iteration, several runs overlaid.

    write_plots([Path("runs/classify-a"), Path("runs/sweep-b")], Path("plots"))  # a sweep: its trial_* runs
    write_run_plots(run.path)  # <run>/plots/*.png, when a run ends

- ``losses.png``: one panel per loss (``loss``, ``loss_gen``, ``loss_dis``): every logged value thin and translucent,
  its running average ``avg_<loss>`` solid;
- ``quality.png``: one panel per evaluation metric (``fid``, ``val_accuracy``, ``val_rmse``, ``val_perplexity``...):
  every numeric key of the records that is no loss, running average, speed or bookkeeping; against the epoch when
  every run is epoch-based and evaluates once per epoch, else against the iteration;
- ``throughput.png``: ``iters_per_sec``.

A figure with nothing to draw is not written. An iteration logged twice across a resume is drawn once, with the
resumed run's value (``records_by_iteration``), and a dotted line marks each resume; values logged as ``"nan"`` or
``"inf"`` are left out. The figures are matplotlib ``Figure`` objects drawn on an Agg canvas, never pyplot: no
global state, safe from any thread. matplotlib is imported on first use: importing it costs a launcher 0.3 s of its
start-up, and a run draws its plots only when it ends.
"""

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from handlers.images import save_image_atomically
from handlers.metrics_log import read_records, records_by_iteration
from runner.errors import UserError
from runner.files import reported_write
from runner.rundir import RunLayout
from runner.settings import Schedule

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
WIDTH = 8.0  # inches: 800 pixels at DPI
ONE_PANEL_HEIGHT = 4.5
PANEL_HEIGHT = 3.0  # each panel of a figure with several, plus TITLE_HEIGHT
TITLE_HEIGHT = 1.5
LOG_SCALE_SPAN = 30  # positive values whose largest is this many times their smallest are drawn on a log scale
RAW_ALPHA = 0.3
# Keys of the records that are no evaluation metric: the position, speed, the resume marks, the learning rate, and a
# process function's output when it is no dict (a loss, but unnamed).
BOOKKEEPING = {"iteration", "epoch", "iters_per_sec", "samples_per_sec", "resumed_from", "checkpoint", "lr", "output"}
PLOT_NAMES = ("losses.png", "quality.png", "throughput.png")


@dataclass
class RunMetrics:
    name: str  # its label in a legend
    records: list[dict[str, Any]]  # one per iteration, in order; a resumed run's values replace the first run's
    resumed_at: list[int]  # iterations a resume went on from
    epoch_based: bool  # its config.json sets max_epochs, not max_iters


def finite(value: Any) -> float | None:
    """A logged number, or None for what cannot be drawn: "nan"/"inf" strings, lists (a confusion matrix), flags."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads(RunLayout(run_dir).config.read_text())
    except (OSError, ValueError):
        return {}  # a run without a readable config is drawn against iterations
    return config if isinstance(config, dict) else {}


def load_run(run_dir: Path, name: str | None = None) -> RunMetrics:
    """What ``run_dir`` logged; none, for a run without ``metrics.jsonl`` or with an empty one."""
    metrics = RunLayout(Path(run_dir)).metrics
    records = [record for _, record in sorted(records_by_iteration(metrics).items())]
    marks = [finite(record.get("resumed_from")) for record in read_records(metrics)]
    resumed_at = [int(mark) for mark in marks if mark is not None]
    config = read_config(Path(run_dir))
    schedule = Schedule.of_config(config)
    epoch_based = schedule is not None and not schedule.per_iteration
    return RunMetrics(name or Path(run_dir).name, records, resumed_at, epoch_based)


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """The run directories ``paths`` name, in order: a run directory (it holds ``metrics.jsonl``) is itself, a sweep
    directory is its ``trial_*`` runs. Raises ``UserError`` for a path that is neither."""
    runs: dict[Path, None] = {}  # ordered, and a run named twice is drawn once
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"{path}: no such directory")
        if RunLayout(path).metrics.is_file():
            runs[path] = None
            continue
        trials = sorted(metrics.parent for metrics in path.glob("trial_*/metrics.jsonl"))
        if not trials:
            raise UserError(f"{path} holds no metrics.jsonl: give a run directory or a sweep directory (trial_*/)")
        runs.update(dict.fromkeys(trials))
    return list(runs)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Each run's folder name, with its parent's where two runs share a name (``trial_0000`` of two sweeps)."""
    names = [path.name for path in run_dirs]
    return [f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name for path in run_dirs]


def loss_keys(runs: Sequence[RunMetrics]) -> list[str]:
    """The losses logged with at least one finite value (``loss_gen``), also when only their average was."""
    keys = drawable_keys(runs)
    losses = [key.removeprefix("avg_") for key in keys if key.removeprefix("avg_").startswith("loss")]
    return list(dict.fromkeys(losses))


def quality_keys(runs: Sequence[RunMetrics]) -> list[str]:
    """The evaluation metrics: whatever else was logged as numbers (``fid``, ``val_accuracy``, ``val_loss``)."""
    return [key for key in drawable_keys(runs) if key not in BOOKKEEPING and not key.startswith(("loss", "avg_"))]


def drawable_keys(runs: Sequence[RunMetrics]) -> list[str]:
    """Keys with at least one finite number, in the order they first appear."""
    keys: dict[str, None] = {}
    for run in runs:
        for record in run.records:
            keys.update((key, None) for key, value in record.items() if key not in keys and finite(value) is not None)
    return list(keys)


def series(run: RunMetrics, key: str, x_key: str = "iteration") -> tuple[list[float], list[float]]:
    """The (x, value) pairs of ``key`` where both are finite numbers."""
    xs, values = [], []
    for record in run.records:
        x, value = finite(record.get(x_key)), finite(record.get(key))
        if x is not None and value is not None:
            xs.append(x)
            values.append(value)
    return xs, values


def evaluated_per_epoch(runs: Sequence[RunMetrics], keys: Sequence[str]) -> bool:
    """Every run counts epochs and evaluated once in each: its scores read best against the epoch. An iteration-based
    run, several evaluations in one epoch (the character model's, one more at a Ctrl-C): against the iteration."""
    for run in runs:
        evaluations = [record for record in run.records if any(key in record for key in keys)]
        epochs = [record.get("epoch") for record in evaluations]
        if not run.epoch_based or not all(isinstance(epoch, int) for epoch in epochs) or len(set(epochs)) < len(epochs):
            return False
    return True


def run_colours(count: int) -> list[Any]:
    """Distinct colours for up to 20 runs, then a gradient (a large sweep's trials in order)."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    if count <= 20:
        return [colormaps["tab20"](index) for index in range(count)]
    return [colormaps["viridis"](index / (count - 1)) for index in range(count)]


def new_figure(panels: int, x_label: str, size: tuple[float, float] | None = None) -> tuple["Figure", list["Axes"]]:
    """``panels`` axes stacked, sharing their x axis, labelled on the lowest; ``size`` in inches (default: the
    width of a page, the height of the panels)."""
    from matplotlib.figure import Figure

    height = ONE_PANEL_HEIGHT if panels == 1 else TITLE_HEIGHT + PANEL_HEIGHT * panels
    figure = Figure(figsize=size or (WIDTH, height), dpi=DPI, layout="constrained")
    axes = list(figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0])
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(x_label)
    if x_label == "epoch":
        from matplotlib.ticker import MaxNLocator

        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure, axes


def scale_to_values(ax: "Axes", values: Sequence[float]) -> None:
    """A log scale for positive values over more than a decade and a half (a regression's MSE falling from 1e5 to 1):
    on a linear one all but the first iterations would lie flat on the axis."""
    if values and min(values) > 0 and max(values) > LOG_SCALE_SPAN * min(values):
        ax.set_yscale("log")


def mark_resumes(ax: "Axes", runs: Sequence[RunMetrics], colours: Sequence[Any]) -> None:
    for run, colour in zip(runs, colours, strict=True):
        for iteration in run.resumed_at:
            ax.axvline(iteration, color=colour, linestyle=":", linewidth=1, alpha=0.7)


def add_legend(figure: "Figure", axes: Sequence["Axes"], runs: Sequence[RunMetrics]) -> None:
    """Several runs: one entry per run (the lines labelled with its name), right of the panels, from whichever panel
    the run appears in. One run: none, the title says it all."""
    if len(runs) > 1:
        lines = {label: line for ax in axes for line, label in zip(*ax.get_legend_handles_labels(), strict=True)}
        names = [run.name for run in runs if run.name in lines]  # in the runs' order
        columns = 1 + (len(names) - 1) // 24  # a large sweep's names in columns rather than off the figure
        figure.legend(
            [lines[name] for name in names], names, loc="outside right upper", fontsize="small", ncols=columns
        )


def title(figure: "Figure", what: str, runs: Sequence[RunMetrics], detail: str = "", resumes: bool = True) -> None:
    """``resumes``: the figure marks them (against the iteration)."""
    heading = f"{what}: {runs[0].name}" if len(runs) == 1 else f"{what}: {len(runs)} runs"
    details = [detail] if detail else []
    details += ["dotted: resumed"] if resumes and any(run.resumed_at for run in runs) else []
    figure.suptitle("\n".join([heading, "; ".join(details)]) if details else heading, fontsize="medium")


def losses_figure(runs: Sequence[RunMetrics]) -> "Figure | None":
    """One panel per loss: every logged value thin, its running average solid; None without any loss."""
    keys = loss_keys(runs)
    if not keys:
        return None
    figure, axes = new_figure(len(keys), "iteration")
    colours = run_colours(len(runs))
    for ax, key in zip(axes, keys, strict=True):
        drawn: list[float] = []
        for run, colour in zip(runs, colours, strict=True):
            raw, average = series(run, key), series(run, f"avg_{key}")
            if raw[0]:  # the run's legend entry is its average, or its values when it has none
                ax.plot(*raw, color=colour, linewidth=0.8, alpha=RAW_ALPHA, label=None if average[0] else run.name)
            if average[0]:
                ax.plot(*average, color=colour, linewidth=1.8, label=run.name)
            drawn += raw[1] + average[1]
        scale_to_values(ax, drawn)
        ax.set_ylabel(key)
        mark_resumes(ax, runs, colours)
    title(figure, "Losses", runs, "thin: every logged value; solid: its running average (avg_)")
    add_legend(figure, axes, runs)
    return figure


def quality_figure(runs: Sequence[RunMetrics]) -> "Figure | None":
    """One panel per evaluation metric, a dot on each evaluation; None without any."""
    keys = quality_keys(runs)
    if not keys:
        return None
    x_key = "epoch" if evaluated_per_epoch(runs, keys) else "iteration"
    figure, axes = new_figure(len(keys), x_key)
    colours = run_colours(len(runs))
    for ax, key in zip(axes, keys, strict=True):
        drawn: list[float] = []
        for run, colour in zip(runs, colours, strict=True):
            xs, values = series(run, key, x_key)
            if values:
                ax.plot(xs, values, color=colour, marker="o", markersize=3, linewidth=1.5, label=run.name)
            drawn += values
        scale_to_values(ax, drawn)
        ax.set_ylabel(key)
        if x_key == "iteration":
            mark_resumes(ax, runs, colours)
    title(figure, "Evaluation", runs, resumes=x_key == "iteration")
    add_legend(figure, axes, runs)
    return figure


def throughput_figure(runs: Sequence[RunMetrics]) -> "Figure | None":
    """Training iterations per second; None when no run measured any."""
    if "iters_per_sec" not in drawable_keys(runs):
        return None
    figure, axes = new_figure(1, "iteration")
    ax = axes[0]
    colours = run_colours(len(runs))
    for run, colour in zip(runs, colours, strict=True):
        xs, values = series(run, "iters_per_sec")
        if values:
            ax.plot(xs, values, color=colour, linewidth=1.2, label=run.name)
    ax.set_ylim(bottom=0)  # speeds compared from zero, not from the slowest
    ax.set_ylabel("iterations / s")
    mark_resumes(ax, runs, colours)
    title(figure, "Training speed", runs)
    add_legend(figure, axes, runs)
    return figure


def figure_pixels(figure: "Figure") -> np.ndarray:
    """The figure drawn on an Agg canvas: (height, width, 3) uint8 RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure_atomically(figure: "Figure", path: Path) -> None:
    save_image_atomically(Image.fromarray(figure_pixels(figure)), path)


def write_figures(runs: Sequence[RunMetrics], out_dir: Path) -> list[Path]:
    """The figures with something to draw, as ``out_dir/<name>.png`` (the folder made for them); their paths."""
    builders = (losses_figure, quality_figure, throughput_figure)
    built = {name: build(runs) for name, build in zip(PLOT_NAMES, builders, strict=True)}
    figures = {name: figure for name, figure in built.items() if figure is not None}
    if figures:
        with reported_write(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        save_figure_atomically(figure, out_dir / name)
    return [out_dir / name for name in figures]


def write_plots(run_dirs: Sequence[Path], out_dir: Path) -> list[Path]:
    """The plots of the runs ``run_dirs`` name (sweep directories expanded to their trials) overlaid, in
    ``out_dir``; the files written (none when nothing was logged). Raises ``UserError`` for a path that holds no
    run."""
    found = find_runs(run_dirs)
    runs = [load_run(path, label) for path, label in zip(found, run_labels(found), strict=True)]
    return write_figures(runs, Path(out_dir))


def write_run_plots(run_dir: Path) -> list[Path]:
    """One run's plots in ``<run_dir>/plots/``, for the end of a run; none (and no folder) while nothing is logged."""
    return write_figures([load_run(Path(run_dir))], RunLayout(Path(run_dir)).plots)


def write_run_plots_or_warn(run_dir: Path, warn: Callable[[str], None]) -> None:
    """``write_run_plots`` however the run ended: a figure that cannot be drawn costs a warning, never the run."""
    try:
        write_run_plots(run_dir)
    except Exception as error:  # noqa: BLE001 - plots are a view of metrics.jsonl, which is intact either way
        warn(f"warning: no plots for {run_dir}: {type(error).__name__}: {error}")
