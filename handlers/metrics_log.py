"""``metrics.jsonl``: one JSON object per logged iteration or evaluation, appended, never truncated.

    log = MetricsLog(run.metrics_path, every=100).attach(trainer)
    # {"iteration": 100, "loss_gen": 2.31, "loss_dis": 0.41, "avg_loss_gen": 2.05, ..., "iters_per_sec": 4.8}

A resumed run appends to the same file: iterations between the checkpoint and the moment the first run died appear
twice, and the later record is the one that counts (``records_by_iteration``). A ``{"resumed_from": N}`` line marks
each resume.

A *branch* (``--resume <checkpoint> --output-dir <new folder>``) starts its file with the history it branches from
(``MetricsLog.carry``): the other run's records up to the checkpoint, then its own ``resumed_from`` line.
"""

import json
import math
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from runner.files import reported_write, write_atomically


def _plain(value: Any) -> Any:
    """Values as JSON can hold them: tensors to numbers or lists, NaN/Inf to strings (the file stays valid JSON)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends ``{"iteration", <process output>, <engine metrics>}`` every ``every`` iterations and at the run's last
    iteration."""

    def __init__(self, path: Path, every: int):
        self.path = Path(path)
        self.every = every

    def attach(self, engine: Engine) -> "MetricsLog":
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.log_iteration)
        # The last iteration too, whatever ``every`` is: a run shorter than it still leaves its numbers (and plots).
        engine.add_event_handler(Events.COMPLETED, self.log_last_iteration)
        return self

    def log_last_iteration(self, engine: Engine) -> None:
        if engine.state.iteration % self.every and engine.state.output is not None:
            self.log_iteration(engine)

    def log_iteration(self, engine: Engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, dict) else {"output": engine.state.output}
        self.write({"iteration": engine.state.iteration, **output, **engine.state.metrics})

    def carry(self, source: Path, up_to: int) -> None:
        """Begin this (new) file with the records of ``source`` up to iteration ``up_to``, in file order, so that
        after a resume there the later record still counts. The records after ``up_to`` are that run's future, not
        this one's: they are left out, and ``source`` is only read."""

        def in_history(record: dict[str, Any]) -> bool:
            at = record.get("iteration", record.get("resumed_from"))
            return isinstance(at, int) and at <= up_to

        lines = [json.dumps(record) + "\n" for record in read_records(source) if in_history(record)]
        write_atomically(self.path, "".join(lines).encode())

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({key: _plain(value) for key, value in record.items()})
        with reported_write(self.path), self.path.open("a+b") as file:
            # A process killed mid-write leaves a torn last line: start on a fresh line after it.
            if file.tell() > 0:
                file.seek(-1, 2)
                if file.read(1) != b"\n":
                    file.write(b"\n")
            file.write(line.encode() + b"\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every well-formed record, in file order (a torn line left by a killed process is skipped; no file, none)."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def records_by_iteration(path: Path) -> dict[int, dict[str, Any]]:
    """Iteration -> every value logged at it (a training record and an evaluation record merge); after a resume,
    the resumed run's values replace the first run's."""
    merged: dict[int, dict[str, Any]] = {}
    for record in read_records(path):
        if "iteration" in record:
            merged.setdefault(record["iteration"], {}).update(record)
    return merged
