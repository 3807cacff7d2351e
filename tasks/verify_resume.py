"""Exact resume, checked on this machine: a task trained once straight through, and once killed (SIGKILL) at random
moments and resumed after each kill; every number both runs logged must be equal.

The killed run is started with the same flags, then killed at ``--kills`` iterations drawn at random (``--kill-seed``)
after the uninterrupted run's first checkpoint, each at a random instant within its iteration, and resumed with
``--resume`` each time, until it finishes. Both runs log every iteration (``--log-every 1``, unless the flags say
otherwise). The comparison covers every key of every ``metrics.jsonl`` record of both runs except the throughput
(``iters_per_sec``, ``samples_per_sec``) and the resume's own bookkeeping; a record or a number one run logged and
the other did not is a difference. On CUDA both runs use deterministic kernels (``--deterministic``, added to the
flags), and the promise is the same: every number equal. A run that ends before its first kill tested no resume: that
is one line and exit code 2.
"""

import argparse
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from handlers.metrics_log import records_by_iteration
from runner.checkpoint_files import checkpoint_files
from runner.errors import UserError, exit_cleanly, say
from runner.rundir import RunLayout
from runner.settings import OneLineParser
from tasks.commands import task_class, trained_tasks, training_launcher
from tasks.standard_run import Task

TASKS: dict[str, tuple[tuple[str, ...], type[Task]]] = {  # the task's name -> its launcher (and sub-command), task
    name: (tuple(training_launcher(name).split()), task_class(name)) for name in trained_tasks()
}
NOT_COMPARED = {"iters_per_sec", "samples_per_sec", "resumed_from", "checkpoint"}  # timings and bookkeeping
ITERATION = re.compile(rb'"iteration": (\d+)')


@dataclass
class Outcome:
    exit_code: int
    kills: list[int]  # the iterations the killed run was killed at
    difference: tuple[int, str, Any, Any] | None  # the first: (iteration, key, uninterrupted, resumed)
    compared: int  # numbers compared


def parse(argv: Sequence[str], description: str, prog: str) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASKS), help="the task to check")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs delivered to the second run (default: 3)")
    parser.add_argument("--kill-seed", type=int, default=0, help="seeds the kill moments (default: 0)")
    parser.add_argument("--work-dir", default="", help="where both runs go (default: a temporary folder)")
    args, task_flags = parser.parse_known_args(argv)
    if args.kills < 1:
        parser.error(f"--kills {args.kills}: must be positive")
    for flag in ("--output-dir", "--resume"):
        if flag in task_flags:
            parser.error(f"{flag} is set by verify_resume itself (see --work-dir)")
    return args, task_flags


def launch_command(start: list[str], sub_command: list[str], flags: list[str]) -> list[str]:
    return [*start, *sub_command, *flags]


def run_to_the_end(command: list[str]) -> None:
    """One launch that must end well; its own one-line error otherwise."""
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise TaskFailed(result.stderr, result.returncode)


class TaskFailed(UserError):
    def __init__(self, stderr: str, exit_code: int):
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        super().__init__(f"the task ended with exit code {exit_code}: {lines[-1] if lines else '(no message)'}")
        self.exit_code = exit_code if exit_code == 2 else 1


def checkpoint_schedule(
    flags: list[str], task_class: type[Task], straight: Path, last: int, kills: int
) -> tuple[list[str], int]:
    """The killed run's flags and its first checkpoint's iteration. A run checkpointed only at its end (a short run
    at the default ``--checkpoint-every``) has nothing to resume from before it: unless the flags set it, the killed
    run checkpoints often enough to be killed ``kills`` times between checkpoints. How often a run checkpoints
    changes none of its numbers (which this check would show)."""
    if "--checkpoint-every" in flags and not task_class.per_epoch:  # the run keeps only its newest checkpoints
        return flags, int(flags[flags.index("--checkpoint-every") + 1])
    if task_class.per_epoch or "--checkpoint-every" in flags:
        saved = checkpoint_files(RunLayout(straight).checkpoints)
        return flags, int(saved[0].stem.split("_")[1]) if saved else last
    every = max(1, last // (kills + 2))
    return [*flags, "--checkpoint-every", str(every)], every


def kill_moments(first_checkpoint: int, last: int, kills: int, rng: random.Random) -> list[int]:
    """``kills`` distinct iterations after the first checkpoint and before the end (fewer if the run is short)."""
    candidates = range(first_checkpoint + 1, last)
    return sorted(rng.sample(candidates, min(kills, len(candidates))))


def newest_iteration(metrics: Path, offset: int) -> tuple[int, int]:
    """The newest iteration recorded after byte ``offset`` of ``metrics``, and the offset of its first unread line."""
    if not metrics.exists():
        return 0, offset
    with metrics.open("rb") as file:
        file.seek(offset)
        data = file.read()
    complete = data[: data.rfind(b"\n") + 1]
    iterations = [int(number) for number in ITERATION.findall(complete)]
    return max(iterations, default=0), offset + len(complete)


def typical_iteration(seen: list[tuple[int, float]]) -> float:
    """Seconds per iteration from the (iteration, time) pairs seen so far: the median over the gaps between them, so
    an evaluation or a checkpoint inside one gap (seconds, against milliseconds per step) does not count as the
    length of an iteration; 0.01 until two are seen."""
    gaps = [(later - earlier) / (after - before) for (before, earlier), (after, later) in pairwise(seen)]
    return statistics.median(gaps) if gaps else 0.01


def kill_at(process: subprocess.Popen, metrics: Path, iteration: int, rng: random.Random) -> bool:
    """SIGKILL ``process`` at a random instant of the iteration after it logs ``iteration``; False if it ended first."""
    offset = metrics.stat().st_size if metrics.exists() else 0
    seen: list[tuple[int, float]] = []  # each new iteration this process logged, and when it was seen
    while process.poll() is None:
        newest, offset = newest_iteration(metrics, offset)
        if newest and (not seen or newest > seen[-1][0]):
            seen.append((newest, time.monotonic()))
        if newest >= iteration:
            time.sleep(rng.uniform(0, typical_iteration(seen)))
            if process.poll() is not None:
                return False
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.005)
    return False


def killed_run(
    launch: list[str], resume: list[str], run_dir: Path, moments: list[int], rng: random.Random
) -> list[int]:
    """The second run: killed at each of ``moments`` (those it reaches) and resumed, to its end."""
    delivered, command = [], launch
    for moment in moments:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not kill_at(process, RunLayout(run_dir).metrics, moment, rng):
            if process.returncode != 0:
                raise TaskFailed(process.stderr.read(), process.returncode)
            return delivered  # it finished before the moment came
        process.stderr.close()
        delivered.append(moment)
        say(f"  killed after iteration {moment}; resuming from {checkpoint_files(run_dir / 'checkpoints')[-1].name}")
        command = resume
    run_to_the_end(command)
    return delivered


def first_difference(straight: Path, killed: Path) -> tuple[tuple[int, str, Any, Any] | None, int]:
    """The first (iteration, key, uninterrupted, resumed) that differs, and how many numbers were compared."""
    ours, theirs = records_by_iteration(straight), records_by_iteration(killed)
    compared = 0
    for iteration in sorted(set(ours) | set(theirs)):
        one, other = ours.get(iteration, {}), theirs.get(iteration, {})
        for key in sorted((set(one) | set(other)) - NOT_COMPARED):
            if one.get(key) != other.get(key):
                return (iteration, key, one.get(key, "(missing)"), other.get(key, "(missing)")), compared
            compared += 1
    return None, compared


def run_device(flags: Sequence[str]) -> str:
    """The ``--dev`` the task's flags give (``--dev cuda`` or ``--dev=cuda``; the last one counts), else cpu."""
    device = "cpu"
    for index, flag in enumerate(flags):
        if flag == "--dev" and index + 1 < len(flags):
            device = flags[index + 1]
        elif flag.startswith("--dev="):
            device = flag.removeprefix("--dev=")
    return device


def deterministic_flags(flags: list[str]) -> list[str]:
    """On CUDA the runs can only repeat with deterministic kernels: ``--deterministic`` is added (and required)."""
    if not run_device(flags).startswith("cuda"):
        return flags
    if "--no-deterministic" in flags:
        raise UserError("--no-deterministic: on CUDA only deterministic kernels repeat a run exactly; drop the flag")
    return flags if "--deterministic" in flags else [*flags, "--deterministic"]


def same_kernels(flags: list[str], straight: Path) -> list[str]:
    """A task that measured a kernel plan at start (``--kernel-plan auto``) could measure another one in the killed
    run: it takes the uninterrupted run's plan, so the two compute alike (its resumes take the checkpoint's)."""
    plan = RunLayout(straight).kernel_plan
    given = any(flag == "--kernel-plan" or flag.startswith("--kernel-plan=") for flag in flags)
    return flags if given or not plan.exists() else [*flags, "--kernel-plan", str(plan)]


def verify(
    task: str, flags: list[str], kills: int, kill_seed: int, work_dir: Path, script: Path | None = None
) -> Outcome:
    """Both runs of ``task`` under ``work_dir``; ``script`` replaces the task's launcher (the tests plant faults)."""
    (launcher, *sub_command), task_class = TASKS[task]
    # The task's launcher through the one table of launchers (as ignite-book runs it): no scripts/ folder needed.
    start = [sys.executable, str(script)] if script else [sys.executable, "-m", "tasks.commands", Path(launcher).stem]
    if "--log-every" not in flags:
        flags = [*flags, "--log-every", "1"]
    flags = deterministic_flags(flags)
    straight, killed = work_dir / "uninterrupted", work_dir / "killed"
    say(f"uninterrupted run: {straight}")
    run_to_the_end(launch_command(start, sub_command, [*flags, "--output-dir", str(straight)]))
    last = max(records_by_iteration(RunLayout(straight).metrics), default=0)
    killed_flags, first_checkpoint = checkpoint_schedule(flags, task_class, straight, last, kills)
    killed_flags = same_kernels(killed_flags, straight)
    moments = kill_moments(first_checkpoint, last, kills, random.Random(kill_seed))
    say(f"killed run: {killed} (kills after iterations {', '.join(map(str, moments)) or 'none: too short a run'})")
    launch = launch_command(start, sub_command, [*killed_flags, "--output-dir", str(killed)])
    resume = launch_command(start, sub_command, ["--resume", str(killed)])
    delivered = killed_run(launch, resume, killed, moments, random.Random(kill_seed + 1))
    if not delivered:
        limit = "--max-epochs" if task_class.per_epoch else "--max-iters"
        raise UserError(f"the run ended before a kill, so no resume was tested: use a larger {limit}")
    difference, compared = first_difference(RunLayout(straight).metrics, RunLayout(killed).metrics)
    return Outcome(0 if difference is None else 1, delivered, difference, compared)


def report(outcome: Outcome) -> int:
    kills = ", ".join(map(str, outcome.kills)) or "none"
    if outcome.difference is None:
        count = len(outcome.kills)
        print(
            f"exact: {outcome.compared} numbers equal, after {count} kill{'s' * (count != 1)} (at iterations {kills})"
        )
        return 0
    iteration, key, straight, resumed = outcome.difference
    print(f"differs: iteration {iteration}, {key}: uninterrupted {straight}, resumed {resumed} (kills at {kills})")
    return 1


def main(argv: Sequence[str] | None, description: str, prog: str = "verify_resume.py") -> None:
    args, flags = parse(list(sys.argv[1:] if argv is None else argv), description, prog)

    def check() -> int:
        with tempfile.TemporaryDirectory(prefix="verify_resume-") as temporary:
            work_dir = Path(args.work_dir or temporary)
            outcome = verify(args.task, flags, args.kills, args.kill_seed, work_dir)
            code = report(outcome)
            if code and not args.work_dir:
                say("run again with --work-dir DIR to keep both runs for a look")
            return code

    exit_cleanly(check, prog)
