"""One page that compares runs: the settings that differ, what each run reached, its curves, and its frames at the
same iterations side by side.

    python scripts/compare.py runs/book-s0 runs/stable-s0                  # -> runs/compare-<date>-<time>/
    python scripts/compare.py runs/sweep-atari_gan --out runs/sweep-page   # a sweep: its trials, ranked

The page is plain HTML with its images beside it (``DIR/index.html``, ``DIR/curves/``, ``DIR/frames/``): no server,
no network. It holds:

- **settings that differ**, one row per setting whose value is not the same in every run; the shared ones are
  folded under one line;
- **outcome per run**: its state (complete, stopped, pruned, failed, as the run recorded it), where it got to, its
  best score and where, its wall time, and the command that continues it;
- **frames at the same iteration**: for every iteration that two or more runs sampled, their sheets side by side
  (G's and its moving average's where both exist);
- **curves**: the runs' losses, quality metrics and speed overlaid (``handlers.plots``);
- for each **sweep** directory, its trials ranked by their value, with the settings they differ in and their states.

A summary goes to the terminal. A path that is no run or sweep, or runs of different tasks, is one line and nothing
is written; ``--out`` takes a new folder, or one holding an earlier page (replaced).
"""

import argparse
import dataclasses
import html
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from handlers.hparams import read_outcome
from handlers.metrics_log import records_by_iteration
from handlers.plots import find_runs, read_config, run_labels, write_plots
from runner.errors import UserError
from runner.files import write_atomically
from runner.rundir import RunLayout
from runner.settings import OneLineParser, Schedule, flag_name
from tasks.commands import command_line, settings_class, trained_tasks, training_launcher

# The score a run is judged by, the first one found: (record key, higher is better).
SCORES = (("fid_ema", False), ("fid", False), ("val_accuracy", True), ("val_rmse", False))
SCORES += (("val_perplexity", False), ("val_loss", False))
SHEET_TAGS = ("fake", "fake_ema", "reconstructions")  # sample sheets worth comparing (the real batches are not)
WHERE_NOT_WHAT = {"output_dir", "resume"}  # where a run is: its name says it
MARK = '<meta name="generator" content="ignite-book compare">'  # an earlier page, which --out may replace


@dataclass
class Run:
    path: Path
    name: str
    task: str
    config: dict[str, Any]
    records: dict[int, dict[str, Any]]
    state: str
    wall_seconds: float

    @property
    def by_epoch(self) -> bool:
        return not Schedule.of_config(self.config).per_iteration

    def position(self) -> str:
        last = max(self.records, default=0)
        epoch = self.records.get(last, {}).get("epoch")
        return f"epoch {epoch}" if self.by_epoch and epoch else f"iteration {last}"

    def best(self) -> tuple[str, float, int] | None:
        """(score key, best value, its iteration), or None without evaluations."""
        for key, higher in SCORES:
            values = {i: r[key] for i, r in self.records.items() if isinstance(r.get(key), int | float)}
            if values:
                at = (max if higher else min)(values, key=values.get)
                return key, values[at], at
        return None

    def sheets(self) -> dict[int, dict[str, Path]]:
        """Iteration -> tag -> sheet, for the tags worth comparing."""
        found: dict[int, dict[str, Path]] = {}
        for tag in SHEET_TAGS:
            for path in RunLayout(self.path).samples.glob(f"{tag}_[0-9]*.png"):
                found.setdefault(int(path.stem.rsplit("_", 1)[1]), {})[tag] = path
        return found

    def continue_command(self) -> str:
        limit = Schedule.of_config(self.config).flag
        return f"{command_line(training_launcher(self.task))} --resume {self.path} {limit} N"


def task_of(config: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    """The task whose settings hold every key of the config (the closest, when several do: a run of an older version
    lacks the newer ones), and the config with those defaults, as a resume would see it. Classify and regress share
    their settings: the model tells them apart."""
    from tasks.supervised import MODEL_KINDS

    fields = {
        name: {field.name: field.default for field in dataclasses.fields(settings_class(name))}
        for name in trained_tasks()
        if name != "regress"  # classify's fields
    }
    retired = {name: settings_class(name).retired for name in fields}  # settings older versions saved, now dropped
    holding = [task for task, defaults in fields.items() if set(config) - retired[task] <= set(defaults)]
    if not holding:
        raise UserError(f"{path}: its config.json is no task's of this version")
    task = min(holding, key=lambda name: len(fields[name]) - len(config))
    regression = MODEL_KINDS.get(config.get("model"), "") == "regression"
    config = {name: value for name, value in config.items() if name not in retired[task]}
    settings = {name: list(v) if isinstance(v, tuple) else v for name, v in fields[task].items()} | config
    return ("regress" if task == "classify" and regression else task), settings


def load_run(path: Path, name: str) -> Run:
    config = read_config(path)
    if not config:
        raise UserError(f"{path}: no readable config.json: not a run directory")
    outcome = read_outcome(path)
    records = records_by_iteration(RunLayout(path).metrics)
    state = outcome.state or "running or killed"  # no process ended it yet
    task, settings = task_of(config, path)
    return Run(path, name, task, settings, records, state, outcome.wall_seconds)


def collect(paths: Sequence[Path]) -> tuple[list[Run], dict[Path, list[Run]]]:
    """The runs the paths name (a sweep's trials included) and, per sweep directory, its trials."""
    found = find_runs(paths)  # one line for a path that holds no run
    runs = [load_run(path, label) for path, label in zip(found, run_labels(found), strict=True)]
    tasks = {run.task for run in runs}
    if len(tasks) > 1:
        shown = ", ".join(f"{run.name} ({run.task})" for run in runs)
        raise UserError(f"runs of different tasks cannot be compared: {shown}")
    sweeps = {Path(p): [run for run in runs if run.path.parent == Path(p)] for p in paths}
    return runs, {path: trials for path, trials in sweeps.items() if trials and not RunLayout(path).metrics.exists()}


def differing(runs: Sequence[Run]) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The settings whose values differ between the runs (name -> each run's), and the ones they share."""
    names = [name for name in runs[0].config if name not in WHERE_NOT_WHAT]
    values = {name: [run.config.get(name) for run in runs] for name in names}
    differ = {name: column for name, column in values.items() if any(v != column[0] for v in column)}
    return differ, {name: column[0] for name, column in values.items() if name not in differ}


def shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def best_cell(run: Run) -> str:
    best = run.best()
    if best is None:
        return "–"
    key, value, iteration = best
    epoch = run.records[iteration].get("epoch") if run.by_epoch else None
    return f"{key} {value:.4g} ({f'epoch {epoch}' if epoch else f'iteration {iteration}'})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def settings_section(runs: Sequence[Run]) -> str:
    differ, shared = differing(runs)
    names = [run.name for run in runs]
    rows = [
        [f"<code>{flag_name(name)}</code>", *(html.escape(shown(v)) for v in values)] for name, values in differ.items()
    ]
    rows.insert(0, ["<code>output_dir</code>", *(html.escape(str(run.path)) for run in runs)])
    shared_rows = [[f"<code>{flag_name(name)}</code>", html.escape(shown(value))] for name, value in shared.items()]
    return (
        f"<h2>Settings that differ ({len(differ)})</h2>{table(['setting', *names], rows)}"
        f"<details><summary>{len(shared)} settings shared by every run</summary>"
        f"{table(['setting', 'value'], shared_rows)}</details>"
    )


def outcome_section(runs: Sequence[Run]) -> str:
    rows = [
        [
            html.escape(run.name),
            run.state,
            run.position(),
            best_cell(run),
            duration(run.wall_seconds),
            f"<code>{html.escape(run.continue_command())}</code>",
        ]
        for run in runs
    ]
    return "<h2>Outcome</h2>" + table(["run", "state", "reached", "best", "wall time", "continue"], rows)


def rank_key(run: Run) -> tuple[bool, float]:
    """Best first; a trial without a score last."""
    best = run.best()
    if best is None:
        return True, 0.0
    higher = dict(SCORES)[best[0]]
    return False, -best[1] if higher else best[1]


def sweep_section(sweep: Path, trials: Sequence[Run]) -> str:
    """The trials ranked by their value (the best score), with the settings they differ in."""
    differ, _ = differing(trials)
    rows = [
        [str(rank), html.escape(run.name), best_cell(run), run.state]
        + [html.escape(shown(run.config.get(name))) for name in differ]
        for rank, run in enumerate(sorted(trials, key=rank_key), start=1)
    ]
    header = ["rank", "trial", "value", "state", *differ]
    return f"<h2>Sweep {html.escape(str(sweep))}: {len(trials)} trials</h2>" + table(header, rows)


def frames_section(runs: Sequence[Run], out: Path) -> str:
    """Every iteration two or more runs sampled: their sheets side by side (copied beside the page)."""
    sheets = [run.sheets() for run in runs]
    if not any(sheets):
        return ""  # a task without sample sheets: no such section
    shared = sorted(i for i in {i for s in sheets for i in s} if sum(i in s for s in sheets) >= 2)
    if not shared:
        return "<h2>Frames at the same iteration</h2><p>No iteration was sampled by two runs.</p>"
    rows = []
    for iteration in shared:
        cells = []
        for index, run_sheets in enumerate(sheets):
            images = []
            for tag, path in sorted(run_sheets.get(iteration, {}).items()):
                copy = out / "frames" / f"{index:03d}_{path.name}"
                shutil.copyfile(path, copy)
                image = f'<img src="frames/{copy.name}" alt="{tag}">'
                images.append(f"<figure>{image}<figcaption>{tag}</figcaption></figure>")
            cells.append("".join(images) or "–")
        rows.append([f"{iteration:,}", *cells])
    return "<h2>Frames at the same iteration</h2>" + table(["iteration", *(run.name for run in runs)], rows)


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}th{background:#f3f3f3}
figure{display:inline-block;margin:0 .3em}figure img{width:200px;image-rendering:pixelated}
td{white-space:nowrap}td code{white-space:normal;word-break:break-all}
figcaption{font-size:.8em;color:#555}img.curve{width:49%;min-width:480px;vertical-align:top}code{font-size:.85em}"""


def page(runs: Sequence[Run], sweeps: dict[Path, list[Run]], out: Path) -> str:
    (out / "frames").mkdir(parents=True, exist_ok=True)
    curves = write_plots([run.path for run in runs], out / "curves")
    sections = [settings_section(runs), outcome_section(runs)]
    sections += [sweep_section(path, trials) for path, trials in sweeps.items()]
    sections.append(frames_section(runs, out))
    images = "".join(f'<img class="curve" src="curves/{path.name}" alt="{path.stem}">' for path in curves)
    sections.append(f"<h2>Curves</h2>{images}")
    title = f"{len(runs)} runs of {runs[0].task}"
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8">{MARK}<title>{title}</title><style>{STYLE}</style></head>'
        f"<body><h1>Compare: {title}</h1>{''.join(sections)}"
        f"<p><small>made {datetime.now():%Y-%m-%d %H:%M} by ignite-book compare</small></p></body></html>\n"
    )


def checked_out(out: Path | None) -> Path:
    """Where the page goes: a new folder, or one holding an earlier page (replaced); anything else is refused."""
    out = out or Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and any(out.iterdir()):
        index = out / "index.html"
        if not (index.is_file() and MARK in index.read_text(errors="replace")):
            raise UserError(f"--out {out}: exists and holds no earlier compare page; give a new folder")
        for folder in ("frames", "curves"):
            shutil.rmtree(out / folder, ignore_errors=True)
    return out


def terminal_summary(runs: Sequence[Run], out: Path) -> str:
    differ, _ = differing(runs)
    lines = [f"{len(runs)} runs of {runs[0].task}; settings that differ: " + (", ".join(differ) or "none")]
    lines += [f"  {run.name}: {run.state} at {run.position()}, best {best_cell(run)}" for run in runs]
    lines.append(f"wrote {out / 'index.html'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str = "compare.py") -> int:
    parser = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP", help="run or sweep directories")
    parser.add_argument("--out", type=Path, metavar="DIR", help="the page's folder (default: runs/compare-<time>)")
    args = parser.parse_args(argv)
    runs, sweeps = collect(args.paths)  # every refusal before anything is written
    out = checked_out(args.out)
    text = page(runs, sweeps, out)
    write_atomically(out / "index.html", text.encode())
    print(terminal_summary(runs, out))
    return 0
