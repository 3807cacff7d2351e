"""One prepared GPU check (issues 17, 27): exact resume, speed eager / CUDA graphs / compiled, producer frames/s, a
profile.

    python benchmarks/gpu_check.py --dev cuda --out gpu_check.md     # 7 minutes at most (--budget-s 420)
    python benchmarks/gpu_check.py --dev cpu --quick --out check.md  # tiny sizes, 3 minutes at most: tries the script

Every measurement is a subprocess with its own timeout, taken in the order of what matters most (``step_names``), and
the planned shares add up to the budget: each step may use its own share and what earlier steps left unused, never
more than what is left. The plan (order, share, running total) is printed first. A step that fails or times out
becomes a row that says so, with what it measured before; a step the budget no longer allows is marked "not run".
The markdown file is rewritten after every step, so a killed check still leaves its rows so far. Steps:

a. ``scripts/verify_resume.py atari_gan --dev cuda --max-iters 200 --checkpoint-every 100 --log-every 10
   --eval-every 100 --kills 1``: a straight 200-iteration run, and one SIGKILLed at a random moment between
   iterations 100 and 200 and resumed from its checkpoint at 100; every logged number compared, exactly: on CUDA both
   runs use ``--deterministic`` kernels. Atari-FID's classifier is built first (``scripts/atari_fid.py``, cached;
   tens of seconds on first use): if that fails or times out, the resume check runs with ``--eval-every 0`` and says
   so.
b. ``scripts/atari_gan.py`` at the chapter's sizes, eager, ``--compile``, and ``--compile --compile-mode
   reduce-overhead`` (CUDA graphs), ``--eval-every 0``: seconds per 100 iterations from the run's ``metrics.jsonl``
   (the median of its ``iters_per_sec`` records after the first few), the warm-up / compile time those first records
   took beyond the steady rate, and the process's wall time.
c. ``benchmarks/frame_stream.py --workers N --json`` for N = 1, 2, 4: the producer's frames/s (its last stdout line).
d. torch.profiler (CPU and CUDA) over 20 steps of the runner's step, built as the launcher builds it
   (``benchmarks/step_switches.make_step``), on synthetic batches: ``key_averages().table``.
"""

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from handlers.metrics_log import read_records
from runner.machine import cpu_fields, set_parent_death_signal, usable_cores

REPO = Path(__file__).resolve().parents[1]
MARGIN_S = 5  # kept back from the budget for the last write
CHAPTER_BATCH = 16
TARGET_FRAMES = 8000  # 0.2 s per 100 iterations at batch 16 (issue 17's H100 target)


@dataclass(frozen=True)
class Plan:
    """What each step runs and how long it may take (seconds); ``--quick`` shrinks everything."""

    sizes: tuple[str, ...] = ()  # size flags for every training run (none: the chapter's)
    resume_flags: tuple[str, ...] = tuple(
        ["--max-iters", "200", "--checkpoint-every", "100", "--log-every", "10", "--eval-every", "100"]
    )
    fid_size: int = 64
    speed_iters: int = 2000
    speed_log_every: int = 100
    warmup_records: int = 3  # records left out of the steady rate (compile, CUDA graph capture, cuDNN autotuning)
    frame_flags: tuple[str, ...] = ("--batches", "1000")  # 16,000 frames: seconds at N = 1
    workers: tuple[int, ...] = (1, 2, 4)
    profile_steps: int = 20
    budget_s: float = 420
    # Each step's share of the budget (the producers' per N); in the order they run, they add up to the budget less
    # MARGIN_S.
    shares: dict[str, float] = field(
        default_factory=lambda: {
            "classifier": 40,
            "resume": 110,
            "eager": 45,
            "cuda-graphs": 80,
            "compile": 70,
            "producer": 15,
            "profile": 25,
        }
    )
    least_s: float = 10  # a step with less time than this left is not started

    def planned(self) -> list[tuple[str, float]]:
        """(step, share) in the order they run."""
        return [(name, self.shares[share_of(name)]) for name in step_names(self.workers)]


QUICK = Plan(
    sizes=("--image-size", "16", "--filters", "4", "--batch-size", "4"),
    resume_flags=(
        "--max-iters",
        "20",
        "--checkpoint-every",
        "10",
        "--log-every",
        "2",
        "--eval-every",
        "10",
        "--fid-samples",
        "64",
    ),
    fid_size=16,
    speed_iters=30,
    speed_log_every=10,
    warmup_records=1,
    frame_flags=("--batches", "20", "--batch-size", "4", "--image-size", "16"),
    workers=(1, 2),
    profile_steps=5,
    budget_s=180,
    shares={
        "classifier": 15,
        "resume": 60,
        "eager": 15,
        "cuda-graphs": 25,
        "compile": 25,
        "producer": 10,
        "profile": 15,
    },
    least_s=3,
)


def step_names(workers: tuple[int, ...]) -> list[str]:
    """The steps by priority: is resume exact, how fast eager, then with CUDA graphs, compiled; the frames the
    producers make; a profile."""
    return ["classifier", "resume", "eager", "cuda-graphs", "compile", *[f"producer-{n}" for n in workers], "profile"]


def share_of(step: str) -> str:
    return "producer" if step.startswith("producer-") else step


def plan_lines(plan: Plan, budget_s: float) -> list[str]:
    """The order, each step's share and the running total, against the budget (printed before anything runs)."""
    lines, total = [f"plan: {budget_s:.0f} s budget, {MARGIN_S} s kept for the last write"], 0.0
    for index, (name, share) in enumerate(plan.planned(), 1):
        total += share
        lines.append(f"  {index}. {name:<12} {share:>4.0f} s   (total {total:>4.0f} s)")
    fits = "fits" if total <= budget_s - MARGIN_S else "does not fit: the last steps get what is left"
    lines.append(f"  planned {total:.0f} s of {budget_s - MARGIN_S:.0f} s: {fits}")
    return lines


SPEED_CONFIGS = {  # name in the table -> (run folder, flags)
    "eager": ("eager", ()),
    "`--compile --compile-mode reduce-overhead` (CUDA graphs)": (
        "cuda-graphs",
        ("--compile", "--compile-mode", "reduce-overhead"),
    ),
    "`--compile`": ("compile", ("--compile",)),
}


# ----------------------------------------------------------------------------------------------- running steps


@dataclass
class Ran:
    """One subprocess: ``status`` is ``ok``, ``failed (exit N): <last line>`` or ``timed out after N s``."""

    status: str
    seconds: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Budget:
    """The time left, and each step's timeout: its share, plus what the steps before it left unused of theirs, never
    more than is left; so no step can take a later step's share."""

    def __init__(self, seconds: float, least: float):
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.least = least
        self.planned: float | None = None  # the time before the first step, and the shares of the steps started

    def left(self) -> float:
        return self.deadline - time.monotonic() - MARGIN_S

    def timeout(self, share: float) -> float | None:
        """The time a step may take, or None when too little is left to start it."""
        now = self.used()
        self.planned = (now if self.planned is None else self.planned) + share  # the header's time is no step's
        allowed = min(self.planned - now, self.deadline - self.started - now - MARGIN_S)
        return allowed if allowed >= self.least else None

    def used(self) -> float:
        return time.monotonic() - self.started


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the step and every process it started (its own session)
    process.wait()


def child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def run_step(command: list[str], timeout: float, logs: Path, name: str) -> Ran:
    """``command`` in its own session (so a timeout kills its children too), its output kept in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    started = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=child_env(),
            start_new_session=True,
            preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL),  # in the child, before exec
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _kill_group(process)
        except BaseException:  # Ctrl-C, or SIGTERM (see main): the step's processes end with this one
            _kill_group(process)
            raise
    seconds = time.monotonic() - started
    stdout, stderr = (path.read_text(errors="replace") for path in (out_path, err_path))
    if code is None:
        status = f"timed out after {timeout:.0f} s"
    elif code:
        status = f"failed (exit {code}): {last_line(stderr or stdout)}"
    else:
        status = "ok"
    return Ran(status, seconds, stdout, stderr)


# ----------------------------------------------------------------------------------------------- reading results


def speed_of(metrics: Path, log_every: int, warmup_records: int) -> dict | None:
    """s/100 iterations (median of the ``iters_per_sec`` records after ``warmup_records``), and the seconds the
    warm-up records took beyond that steady rate; None without a steady record."""
    rates = [
        float(r["iters_per_sec"]) for r in read_records(metrics) if isinstance(r.get("iters_per_sec"), int | float)
    ]
    steady = [rate for rate in rates[warmup_records:] if rate > 0]
    if not steady:
        return None
    rate = statistics.median(steady)
    warmup = rates[:warmup_records]
    extra = max(0.0, sum(log_every / r for r in warmup if r > 0) - len(warmup) * log_every / rate)
    return {"s_per_100": 100 / rate, "iters_per_sec": rate, "warmup_s": extra, "records": len(steady)}


def frames_record(stdout: str) -> dict | None:
    """frame_stream.py's ``--json`` result: its last stdout line, a JSON object with ``frames_per_s``."""
    try:
        record = json.loads(last_line(stdout))
    except ValueError:
        return None
    ok = isinstance(record, dict) and isinstance(record.get("frames_per_s"), int | float)
    return record if ok else None


def option_missing(ran: Ran) -> bool:
    return "unrecognized arguments" in ran.stderr or "no such option" in ran.stderr


# ----------------------------------------------------------------------------------------------- the report


PENDING = "pending"


@dataclass
class Report:
    """The markdown, rendered whole after every step."""

    title: str
    machine: list[tuple[str, str]] = field(default_factory=list)
    sections: dict[str, tuple[list[str], dict[str, list[str]]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    profile: str = PENDING

    def table(self, section: str, columns: list[str], rows: list[str]) -> None:
        self.sections[section] = (columns, {row: [row] + [""] * (len(columns) - 2) + [PENDING] for row in rows})

    def set(self, section: str, row: str, *cells: str) -> None:
        self.sections[section][1][row] = [row, *cells]

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def finish(self, reason: str) -> None:
        """What the check did not reach says why."""
        for _, rows in self.sections.values():
            for cells in rows.values():
                if cells[-1] == PENDING:
                    cells[-1] = reason
        if self.profile == PENDING:
            self.profile = reason

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", "| | |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in self.machine]
        for section, (columns, rows) in self.sections.items():
            lines += ["", f"## {section}", ""]
            lines += [f"| {' | '.join(columns)} |", f"| {' | '.join('---' for _ in columns)} |"]
            lines += [f"| {' | '.join(cell.replace('|', '/') for cell in cells)} |" for cells in rows.values()]
            lines += [""] + self.notes.get(section, []) if self.notes.get(section) else []
        lines += ["", "## d. Profile of the runner's step", "", "```text", self.profile.rstrip(), "```", ""]
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(self.markdown())
        temporary.replace(path)


PARTS = ("resume", "eager", "cuda-graphs", "compile", "producer", "profile")


def part_of(step: str) -> str:
    """The ``--only`` name of a step."""
    return "producer" if step.startswith("producer-") else step


RESUME = "a. End to end with a resume"
SPEED = "b. Speed: seconds per 100 iterations"
PRODUCER = "c. Frame producer: frames/s by worker processes"


TORCH_INFO = """
import json, sys, torch
dev = sys.argv[1]
if dev.startswith("cuda") and torch.cuda.is_available():
    p = torch.cuda.get_device_properties(torch.device(dev).index or 0)
    gpu = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}"
else:
    gpu = f"none used (--dev {dev}; CUDA available: {torch.cuda.is_available()})"
cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
print(json.dumps([gpu, f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}"]))
"""


def machine_rows(dev: str, command: str) -> list[tuple[str, str]]:
    """The header. torch is asked in a child process: this one stays without threads or a CUDA context."""
    rows = []
    try:
        info = subprocess.run(
            [sys.executable, "-c", TORCH_INFO, dev], capture_output=True, text=True, timeout=120, check=True
        )
        gpu, versions = json.loads(last_line(info.stdout))
    except Exception as error:  # the header must not cost the table
        gpu, versions = f"unknown ({type(error).__name__})", "unknown"
    driver = ""
    with contextlib.suppress(Exception):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    cpu = cpu_fields().get("model name") or platform.processor() or platform.machine()
    usable = usable_cores()
    commit = "unknown"
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        commit += " (with local changes)" if changed else ""
    rows.append(("GPU", gpu + (f", driver {driver}" if driver else "")))
    rows.append(("software", f"{versions}, Python {platform.python_version()}"))
    rows.append(("CPU", f"{cpu}: {usable} usable cores of {os.cpu_count()}"))
    rows.append(("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    rows.append(("commit", commit or "unknown"))
    rows.append(("command", f"`{command}`"))
    return rows


# ----------------------------------------------------------------------------------------------- the steps


class Check:
    def __init__(self, args: argparse.Namespace, plan: Plan, work: Path):
        self.args, self.plan, self.work = args, plan, work
        self.budget = Budget(args.budget_s, plan.least_s)
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.logs = self.out.with_name(self.out.stem + "-logs")  # each step's stdout and stderr, beside the table
        command = shlex.join(["python", "benchmarks/gpu_check.py", *args.argv])
        self.report = Report(f"GPU check: `--dev {args.dev}`{' (--quick)' if args.quick else ''}")
        self.report.machine = machine_rows(args.dev, command)
        self.report.table(RESUME, ["step", "seconds", "result"], ["Atari-FID classifier", "resume check"])
        speed_columns = ["configuration", "s / 100 it", "it/s", "warm-up / compile s", "process s", "result"]
        self.report.table(SPEED, speed_columns, list(SPEED_CONFIGS))
        producer_columns = ["workers", "frames/s", "per worker", f"share of {TARGET_FRAMES:,} frames/s", "result"]
        self.report.table(PRODUCER, producer_columns, [str(n) for n in plan.workers])
        sizes = " ".join(plan.sizes) or "the chapter's sizes (64x64, batch 16, 64 filters)"
        speed_note = (
            f"Sizes: {sizes}; `--eval-every 0`, {plan.speed_iters} iterations, `--log-every {plan.speed_log_every}`; "
            f"the first {plan.warmup_records} records are warm-up. The rate is the launcher's `iters_per_sec`, the "
            "live frame stream included (`--producer auto`); section d times the step alone."
        )
        self.report.note(SPEED, speed_note)
        producer_note = (
            f"`{Path(args.frame_stream).name} --workers N --json`. {TARGET_FRAMES:,} frames/s feed batches of "
            f"{CHAPTER_BATCH} at 0.2 s per 100 iterations (issue 17's target on an H100)."
        )
        self.report.note(PRODUCER, producer_note)
        self.save()

    def save(self) -> None:
        self.report.write(self.out)

    def step(self, name: str, command: list[str]) -> Ran | None:
        timeout = self.budget.timeout(self.plan.shares[share_of(name)])
        if timeout is None:
            return None
        print(f"[{self.budget.used():5.0f} s] {name}: {shlex.join(command[1:])}", flush=True)
        ran = run_step(command, timeout, self.logs, name)
        print(f"[{self.budget.used():5.0f} s] {name}: {ran.status} ({ran.seconds:.1f} s)", flush=True)
        return ran

    def python(self, script: str | Path, *flags: str) -> list[str]:
        return [sys.executable, str(REPO / script), *flags]

    # a.
    def resume(self) -> None:
        plan, dev = self.plan, self.args.dev
        ran = self.step("classifier", self.python("scripts/atari_fid.py", "--image-size", str(plan.fid_size)))
        if ran is None:
            return
        with_fid = ran.ok
        result = last_line(ran.stdout) if ran.ok else ran.status
        self.report.set(RESUME, "Atari-FID classifier", f"{ran.seconds:.1f}", result)
        self.save()
        flags = ["atari_gan", "--dev", dev, *plan.sizes, *plan.resume_flags, "--kills", "1"]
        if not with_fid:
            flags[flags.index("--eval-every") + 1] = "0"
            self.report.note(RESUME, "The classifier was not ready, so the resume check ran with `--eval-every 0`.")
        flags += ["--work-dir", str(self.work / "resume")]
        ran = self.step("resume", self.python("scripts/verify_resume.py", *flags))
        if ran is None:
            return
        outcome = last_line(ran.stdout)
        compared = outcome.startswith(("exact", "differs"))
        result = outcome if compared else ran.status
        self.report.set(RESUME, "resume check", f"{ran.seconds:.1f}", result)
        how = (
            f"`python scripts/verify_resume.py {shlex.join(flags[:-2])}`: a straight run, and one SIGKILLed at a "
            "random moment after its first checkpoint and resumed from it (`--resume DIR`); every logged number of "
            "both compared."
        )
        self.report.note(RESUME, how)
        self.save()

    # b.
    def speed(self, name: str) -> None:
        plan, (slug, flags) = self.plan, SPEED_CONFIGS[name]
        run_dir = self.work / f"speed-{slug}"
        every, iters = str(plan.speed_log_every), str(plan.speed_iters)
        command = self.python(
            "scripts/atari_gan.py",
            "--dev",
            self.args.dev,
            *plan.sizes,
            "--max-iters",
            iters,
            "--log-every",
            every,
            "--eval-every",
            "0",
            "--image-every",
            iters,
            "--checkpoint-every",
            iters,
            "--output-dir",
            str(run_dir),
            *flags,
        )
        ran = self.step(slug, command)
        if ran is None:
            return
        speed = speed_of(run_dir / "metrics.jsonl", plan.speed_log_every, plan.warmup_records)
        if speed is None:
            status = ran.status if not ran.ok else "ok, but no steady-state record"
            self.report.set(SPEED, name, "", "", "", f"{ran.seconds:.1f}", status)
        else:
            self.report.set(
                SPEED,
                name,
                f"{speed['s_per_100']:.3f}",
                f"{speed['iters_per_sec']:.1f}",
                f"{speed['warmup_s']:.1f}",
                f"{ran.seconds:.1f}",
                f"{ran.status} (median of {speed['records']} records)",
            )
        self.save()

    # c.
    def producer(self, workers: int) -> None:
        row = str(workers)
        command = self.python(self.args.frame_stream, "--workers", row, "--json", *self.plan.frame_flags)
        ran = self.step(f"producer-{workers}", command)
        if ran is None:
            return
        record = frames_record(ran.stdout)
        if record is None and option_missing(ran):
            missing = f"not available: {Path(self.args.frame_stream).name} has no --workers / --json"
            self.report.set(PRODUCER, row, "", "", "", missing)
        elif record is None:
            status = ran.status if not ran.ok else f"no JSON result line: {last_line(ran.stdout)}"
            self.report.set(PRODUCER, row, "", "", "", status)
        else:
            fps = float(record["frames_per_s"])
            extra = [f"{key} {value:.4g}" for key, value in record.items() if isinstance(value, float)]
            extra = [item for item in extra if not item.startswith("frames_per_s ")][:3]
            status = ran.status + (f" ({', '.join(extra)})" if extra else "")
            self.report.set(PRODUCER, row, f"{fps:,.0f}", f"{fps / workers:,.0f}", f"{fps / TARGET_FRAMES:.0%}", status)
        self.save()

    # d.
    def profile(self) -> None:
        flags = ["--profile-step", "--dev", self.args.dev, "--steps", str(self.plan.profile_steps)]
        ran = self.step("profile", self.python("benchmarks/gpu_check.py", *flags, *self.plan.sizes))
        if ran is None:
            return
        self.report.profile = ran.stdout if ran.ok else f"{ran.status}\n{ran.stdout[-3000:]}"
        self.save()

    def leave_out(self, part: str) -> None:
        reason = "left out (--only)"
        if part == "resume":
            for row in self.report.sections[RESUME][1]:
                self.report.set(RESUME, row, "", reason)
        elif part.startswith("producer-"):
            self.report.set(PRODUCER, part.removeprefix("producer-"), "", "", "", reason)
        elif part == "profile":
            self.report.profile = reason
        else:
            name = next(name for name, (slug, _) in SPEED_CONFIGS.items() if slug == part)
            self.report.set(SPEED, name, "", "", "", "", reason)

    def steps(self) -> dict[str, Callable[[], None]]:
        """``step_names``' steps (the classifier's is the first half of ``resume``), by name, in their order."""
        by_slug = {slug: name for name, (slug, _) in SPEED_CONFIGS.items()}
        steps: dict[str, Callable[[], None]] = {"resume": self.resume}
        for slug in ("eager", "cuda-graphs", "compile"):
            steps[slug] = lambda name=by_slug[slug]: self.speed(name)
        steps.update({f"producer-{n}": lambda n=n: self.producer(n) for n in self.plan.workers})
        steps["profile"] = self.profile
        return steps

    def run(self) -> None:
        """The steps by priority: resume exactness, eager speed, CUDA graphs, compile, the producers, the profile."""
        reason = "stopped before it ran"
        try:
            for part, step in self.steps().items():
                if self.args.only and part_of(part) not in self.args.only:
                    self.leave_out(part)
                else:
                    step()
            reason = "not run: budget spent"
        finally:
            self.report.machine.append(("budget", f"{self.args.budget_s:.0f} s; used {self.budget.used():.0f} s"))
            self.report.finish(reason)
            self.save()


# ----------------------------------------------------------------------------------------------- d., in its own process


def profile_step(dev: str, steps: int, size_flags: list[str]) -> None:
    """Prints the step's time outside the profiler, then torch.profiler's table of ``steps`` steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    spec = importlib.util.spec_from_file_location("step_switches", REPO / "benchmarks" / "step_switches.py")
    switches = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(switches)
    flags = " ".join(["--dev", dev, *size_flags])
    settings = switches.settings_of(flags)
    step, engine = switches.make_step(flags)
    cuda = torch.device(dev).type == "cuda"
    source = torch.Generator().manual_seed(0)
    shape = (settings.batch_size, 3, settings.image_size, settings.image_size)
    batches = [torch.rand(shape, generator=source) * 2 - 1 for _ in range(4)]
    if cuda:
        batches = [batch.pin_memory() for batch in batches]

    def train(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            engine.state.iteration += 1
            step(engine, batches[engine.state.iteration % len(batches)])
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    train(5)  # the allocator's first blocks, lazy initialisations (and cuDNN's search, under --cudnn-benchmark)
    seconds = train(steps)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        train(steps)
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    sizes = " ".join(size_flags) or "(the chapter's sizes)"
    print(
        f"--dev {dev} {sizes}: {seconds / steps * 1000:.2f} ms per step without the profiler, synthetic batches; "
        f"{steps} steps profiled, sorted by {sort_by}"
    )
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=15))


# ----------------------------------------------------------------------------------------------- command line


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", default="cuda", help="the device of every training run (default: cuda)")
    parser.add_argument("--out", default="gpu_check.md", help="the markdown written (default: gpu_check.md)")
    parser.add_argument("--budget-s", type=float, help="seconds for everything (default: 420; --quick: 90)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations, N = 1..2: tries the script")
    parser.add_argument("--work-dir", help="keep the training runs here (default: a temporary folder, removed)")
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=[],
        help=f"some parts only, comma-separated: {','.join(PARTS)} (default: all)",
    )
    parser.add_argument("--frame-stream", default="benchmarks/frame_stream.py", help=argparse.SUPPRESS)
    parser.add_argument("--profile-step", action="store_true", help=argparse.SUPPRESS)  # d., in the child
    parser.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if set(args.only) - set(PARTS):
        parser.error(f"--only {','.join(args.only)}: choose from {','.join(PARTS)}")
    if rest and not args.profile_step:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.size_flags = rest
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.profile_step:
        profile_step(args.dev, args.steps, args.size_flags)
        return
    plan = QUICK if args.quick else Plan()
    if args.budget_s is None:
        args.budget_s = plan.budget_s

    def stop(signum: int, frame: object) -> None:  # e.g. `timeout`: the step's processes go too, the table stays
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work = Path(args.work_dir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        print("\n".join(plan_lines(plan, args.budget_s)), flush=True)
        check = Check(args, plan, work)
        check.run()
    print(check.report.markdown())
    print(f"written to {args.out}; each step's output in {check.logs}")


if __name__ == "__main__":
    main()
