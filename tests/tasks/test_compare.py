"""compare.py: one page of runs and sweeps, checked as written and as a real browser renders it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import tasks.atari_gan as task
import tasks.sweep as sweep
from runner.errors import UserError
from tasks.compare import main as compare

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
MUST_HAVE_BROWSER = os.environ.get("IGNITE_BOOK_REQUIRE_BROWSER") == "1"  # CI: never skip the browser test


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_settings):
    """The issue's pair: 20 tiny iterations each, differing in --lr and --seed, sheets at 10 and 20."""
    folder = tmp_path_factory.mktemp("compare")
    for name, lr, seed in (("a", 1e-4, 1), ("b", 2e-4, 2)):
        settings = tiny_settings(folder / name, lr=lr, seed=seed, eval_every=10, image_every=10)
        assert task.train(settings).exit_code == 0
    return folder / "a", folder / "b"


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump({"lr": {"low": 1e-4, "high": 1e-3, "log": True}, "filters": 4, "batch_size": 4}))
    flags = ["--max-iters", "4", "--eval-every", "2", "--image-size", "16", "--fid-samples", "64"]
    argv = ["atari_gan", "--n-trials", "3", "--space", str(space), "--output-dir", str(folder / "S"), *flags]
    assert sweep.main([*argv, "--latent-size", "8", "--image-every", "2"]) == 0
    return folder / "S"


def written_page(paths, out: Path, capsys) -> str:
    assert compare([*map(str, paths), "--out", str(out)]) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    return (out / "index.html").read_text()


def differing_rows(page: str) -> list[str]:
    section = page.split("<h2>Settings that differ")[1].split("</table>")[0]
    return re.findall(r"<tr><td><code>([^<]+)</code>", section)


def test_the_settings_that_differ_are_exactly_lr_and_seed_and_the_sheets_sit_side_by_side(two_runs, tmp_path, capsys):
    page = written_page(two_runs, tmp_path / "page", capsys)
    assert differing_rows(page) == ["output_dir", "--seed", "--lr"]
    assert "settings shared by every run</summary>" in page
    frames = page.split("<h2>Frames at the same iteration</h2>")[1]
    for iteration in ("10", "20"):
        row = frames.split(f"<td>{iteration}</td>")[1].split("</tr>")[0]
        assert row.count('alt="fake"') == 2 and row.count('alt="fake_ema"') == 2  # both runs, G and its average
    assert all((tmp_path / "page" / "frames" / name).exists() for name in re.findall(r'src="frames/([^"]+)"', page))
    outcome = page.split("<h2>Outcome</h2>")[1].split("</table>")[0]
    assert outcome.count("<td>complete</td>") == 2 and "--resume" in outcome and "fid_ema" in outcome


def test_a_sweep_ranks_its_trials_by_value_with_their_states_and_searched_settings(tiny_sweep, tmp_path, capsys):
    page = written_page([tiny_sweep], tmp_path / "page", capsys)
    table = page.split("<h2>Sweep ")[1].split("</table>")[0]
    assert "<th>lr</th>" in table
    values = [float(v) for v in re.findall(r"<td>fid_ema ([0-9.e+]+) \(iteration", table)]
    assert len(values) == 3 and values == sorted(values)


@pytest.mark.parametrize("case", ["empty folder", "different tasks", "not a page"])
def test_bad_input_is_one_line_and_nothing_is_written(case, two_runs, tmp_path):
    out = tmp_path / "page"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        paths, message = [tmp_path / "empty"], "holds no metrics.jsonl"
    elif case == "different tasks":
        other = tmp_path / "regress"
        other.mkdir()
        (other / "config.json").write_text('{"max_epochs": 1, "model": "linear", "dataset": "linear"}')
        (other / "metrics.jsonl").write_text('{"iteration": 1, "loss": 1.0}\n')
        paths, message = [two_runs[0], other], r"runs of different tasks cannot be compared: a \(atari_gan\), regress"
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        paths, message = list(two_runs), "exists and holds no earlier compare page"
    with pytest.raises(UserError, match=message):
        compare([*map(str, paths), "--out", str(out)])
    assert not out.exists() or [p.name for p in out.iterdir()] == ["notes.txt"]


def test_an_earlier_page_is_replaced(two_runs, tmp_path, capsys):
    out = tmp_path / "page"
    written_page([two_runs[0]], out, capsys)
    page = written_page(two_runs, out, capsys)
    assert "Compare: 2 runs" in page and len(list((out / "frames").iterdir())) > 0


@pytest.mark.skipif(not BROWSER and not MUST_HAVE_BROWSER, reason="chromium is not installed here (CI installs it)")
def test_a_real_browser_renders_the_tables_and_the_sheets(two_runs, tiny_sweep, tmp_path, capsys):
    assert BROWSER, "chromium is missing: .ci/run installs it (apt-get install chromium)"
    out = tmp_path / "page"
    written_page([*two_runs, tiny_sweep], out, capsys)
    url = (out / "index.html").resolve().as_uri()
    common = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "Settings that differ" in dom and "<code>--lr</code>" in dom and "<h2>Outcome</h2>" in dom
    assert dom.count('alt="fake_ema"') >= 4 and "<h2>Sweep " in dom
    shot = tmp_path / "page.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,1600", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"


def test_a_run_of_an_older_version_with_a_retired_setting_is_still_a_tasks(tmp_path):
    from tasks.compare import task_of

    task, settings = task_of({"games": ["Pong"], "max_iters": 10, "gemm_weight_grads": True}, tmp_path / "old")
    assert task == "atari_gan" and "gemm_weight_grads" not in settings and settings["kernel_plan"] == "auto"
