"""docs/bad-input.md is true: every flag of every launcher, given a value it refuses, ends in one line."""

import dataclasses

import bad_input_table as table
import pytest
import torch


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input")
    table.prepare(folder)
    return list(table.outcomes(folder))


def test_each_refusal_is_one_line_a_nonzero_exit_no_traceback_and_nothing_written(outcomes, tmp_path):
    table.prepare(tmp_path)
    prepared = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    for case, code, stderr, names in outcomes:
        assert code != 0, case.command
        assert len(table.error_lines(stderr)) == 1 and "Traceback" not in stderr, (case.command, stderr)
        assert names == prepared, (case.command, names)  # the folder holds what prepare() made, nothing more


def test_each_message_names_the_flag_or_the_value_refused(outcomes):
    for case, _, stderr, _ in outcomes:
        (message,) = table.error_lines(stderr)
        given = case.args[-1] if case.args else case.script.split()[-1]
        names_value = f"'{given}'" in message or f"{given}:" in message or (len(given) > 3 and given in message)
        assert case.flag in message or names_value, (case.command, message)


def test_the_page_is_what_the_launchers_answer_today(outcomes):
    rows = [table.table_row(case, code, stderr) for case, code, stderr, _ in outcomes]
    documented = table.documented_rows()
    if torch.cuda.is_available():  # the page is written where CUDA is missing and every --dev cuda:N is refused so
        rows, documented = ([row for row in kept if "--dev cuda" not in row] for kept in (rows, documented))
    assert documented == rows, "docs/bad-input.md is stale: python tests/bad_input_table.py --write"


def test_every_flag_of_every_launcher_has_a_row():
    covered = {(case.script, case.flag) for case in table.all_cases()}
    for command, settings_cls in table.launchers().items():
        for field in dataclasses.fields(settings_cls):
            assert (command, table.flag_of(field.name)) in covered, (command, field.name)
