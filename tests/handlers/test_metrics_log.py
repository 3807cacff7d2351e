"""metrics.jsonl: appended JSON lines that survive a torn last line and non-finite numbers."""

import json
import math

import pytest
import torch
from ignite.engine import Engine, Events

from handlers.metrics_log import MetricsLog, read_records, records_by_iteration


def strict_json(line: str):
    """``json.loads`` refusing NaN/Infinity, which Python accepts but JSON (and most readers) do not."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def loss_engine() -> Engine:
    return Engine(lambda engine, batch: {"loss": float(batch)})


def test_writes_one_line_per_every_iterations_and_one_at_the_last_with_output_and_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    engine = loss_engine()

    @engine.on(Events.ITERATION_COMPLETED)
    def add_metric(engine):
        engine.state.metrics["double"] = 2 * engine.state.output["loss"]

    MetricsLog(path, every=2).attach(engine)
    engine.run([1.0, 2.0, 3.0, 4.0, 5.0], max_epochs=1)

    lines = path.read_text().splitlines()
    assert [strict_json(line) for line in lines] == [
        {"iteration": 2, "loss": 2.0, "double": 4.0},
        {"iteration": 4, "loss": 4.0, "double": 8.0},
        {"iteration": 5, "loss": 5.0, "double": 10.0},  # the run's last, off the schedule
    ]
    assert path.read_text().endswith("\n")


def test_a_run_shorter_than_every_still_writes_its_last_record_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    engine = loss_engine()
    MetricsLog(path, every=100).attach(engine)
    engine.run([1.0, 2.0, 3.0], max_epochs=1)
    assert [record["iteration"] for record in read_records(path)] == [3]
    on_schedule = tmp_path / "on_schedule.jsonl"
    engine = loss_engine()
    MetricsLog(on_schedule, every=3).attach(engine)
    engine.run([1.0, 2.0, 3.0], max_epochs=1)
    assert [record["iteration"] for record in read_records(on_schedule)] == [3]  # logged once, not twice


def test_a_non_dict_output_is_logged_as_output(tmp_path):
    path = tmp_path / "metrics.jsonl"
    engine = Engine(lambda engine, batch: batch * 10)
    MetricsLog(path, every=1).attach(engine)

    engine.run([1, 2], max_epochs=1)

    assert read_records(path) == [{"iteration": 1, "output": 10}, {"iteration": 2, "output": 20}]


def test_tensor_values_are_written_as_plain_numbers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    engine = Engine(lambda engine, batch: {"loss": torch.tensor(batch)})
    MetricsLog(path, every=1).attach(engine)

    engine.run([0.5], max_epochs=1)

    assert strict_json(path.read_text().splitlines()[0]) == {"iteration": 1, "loss": 0.5}


def test_two_logs_on_the_same_file_append_instead_of_truncating(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = loss_engine()
    MetricsLog(path, every=1).attach(first)
    first.run([1.0, 2.0], max_epochs=1)

    second = loss_engine()
    log = MetricsLog(path, every=1).attach(second)
    log.write({"resumed_from": 2})
    second.run([3.0], max_epochs=1)

    assert read_records(path) == [
        {"iteration": 1, "loss": 1.0},
        {"iteration": 2, "loss": 2.0},
        {"resumed_from": 2},
        {"iteration": 1, "loss": 3.0},
    ]


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "loss": 1.0}\n{"iteration": 2, "lo')  # killed mid-write

    assert read_records(path) == [{"iteration": 1, "loss": 1.0}]

    MetricsLog(path, every=1).write({"iteration": 2, "loss": 2.5})

    lines = path.read_text().splitlines()
    assert lines == ['{"iteration": 1, "loss": 1.0}', '{"iteration": 2, "lo', '{"iteration": 2, "loss": 2.5}']
    assert read_records(path) == [{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 2.5}]


def test_writing_to_a_missing_or_empty_file_adds_no_blank_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, every=1)
    log.write({"iteration": 1})
    path.write_text("")
    log.write({"iteration": 2})

    assert path.read_text() == '{"iteration": 2}\n'


@pytest.mark.parametrize(("value", "written"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_non_finite_values_are_written_as_strings_and_lines_stay_valid_json(tmp_path, value, written):
    path = tmp_path / "metrics.jsonl"
    engine = Engine(lambda engine, batch: {"loss": value, "other": 1.0, "tensor": torch.tensor(value)})
    MetricsLog(path, every=1).attach(engine)

    engine.run([0], max_epochs=1)

    record = strict_json(path.read_text().splitlines()[0])
    assert record == {"iteration": 1, "loss": written, "other": 1.0, "tensor": written}


def test_records_by_iteration_keeps_the_later_record_of_a_repeated_iteration(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, every=1)
    for record in [
        {"iteration": 1, "loss": 1.0},
        {"iteration": 2, "loss": 2.0},
        {"iteration": 3, "loss": 3.0},
        {"resumed_from": 2},
        {"iteration": 3, "loss": 30.0},
        {"iteration": 4, "loss": 40.0},
    ]:
        log.write(record)

    by_iteration = records_by_iteration(path)

    assert sorted(by_iteration) == [1, 2, 3, 4]
    assert by_iteration[3] == {"iteration": 3, "loss": 30.0}
    assert by_iteration[2] == {"iteration": 2, "loss": 2.0}


def test_read_records_skips_blank_and_garbage_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n\nnot json\n{"iteration": 2}\n')

    assert read_records(path) == [{"iteration": 1}, {"iteration": 2}]


def test_a_branch_carries_the_history_up_to_its_checkpoint_and_not_the_other_runs_future(tmp_path):
    source = tmp_path / "run" / "metrics.jsonl"
    source.parent.mkdir()
    history = [
        {"iteration": 1, "loss": 1.0},
        {"iteration": 2, "loss": 2.0},
        {"iteration": 3, "loss": 3.0},
        {"resumed_from": 2, "checkpoint": "c.pt"},
        {"iteration": 3, "loss": 30.0},
        {"iteration": 3, "fid": 9.0},
        {"iteration": 4, "loss": 40.0},
        {"resumed_from": 4, "checkpoint": "d.pt"},
        {"iteration": 5, "loss": 50.0},
    ]
    source.write_text("".join(json.dumps(record) + "\n" for record in history))
    before = source.read_bytes()
    branch = tmp_path / "branch" / "metrics.jsonl"
    branch.parent.mkdir()

    log = MetricsLog(branch, every=1)
    log.carry(source, up_to=3)
    log.write({"resumed_from": 3})

    assert read_records(branch) == [*history[:6], {"resumed_from": 3}]
    assert records_by_iteration(branch)[3] == {"iteration": 3, "loss": 30.0, "fid": 9.0}
    assert source.read_bytes() == before
