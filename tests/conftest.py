"""Shared helpers: tiny sizes so a whole Atari GAN run takes a couple of seconds on 2 cores."""

import hashlib
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "scripts" / "atari_gan.py"
# The chapter's model at smoke size: 16x16 frames, 4 filters, batches of 4, latent 8.
TINY = ["--dev", "cpu", "--image-size", "16", "--filters", "4", "--batch-size", "4", "--latent-size", "8"]
TINY += ["--fid-samples", "64"]


def run_launcher(
    *args: str, timeout: float = 120, script: Path = LAUNCHER, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def fake_one_gpu(log: Path) -> dict[str, str]:
    """The environment that makes every Python process see one CUDA device (``tests/fake_cuda``), its calls in log."""
    path = os.pathsep.join([str(REPO / "tests" / "fake_cuda"), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, "FAKE_CUDA_LOG": str(log)}


def start_launcher(*args: str, script: Path = LAUNCHER) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


LOSSES = ("loss_gen", "loss_dis", "avg_loss_gen", "avg_loss_dis")  # what a GAN run's records are compared on


def losses(run_dir: Path, iterations) -> dict[int, tuple]:
    """A GAN run's losses and their running averages at ``iterations`` (a resumed run's later record counts)."""
    from handlers.metrics_log import records_by_iteration

    records = records_by_iteration(run_dir / "metrics.jsonl")
    return {i: tuple(records[i][key] for key in LOSSES) for i in iterations}


def wait_for_iteration(run_dir: Path, iteration: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run started as ``process`` has logged ``iteration`` (its stderr is shown if it ends first)."""
    from handlers.metrics_log import read_records

    deadline = time.monotonic() + timeout
    while not any(r.get("iteration", 0) >= iteration for r in read_records(run_dir / "metrics.jsonl")):
        assert process.poll() is None, process.stderr.read() if process.stderr else "the run ended"
        assert time.monotonic() < deadline, f"iteration {iteration} not reached"
        time.sleep(0.005)


def gone(pids: list[int], timeout: float = 10) -> bool:
    """Whether every process of ``pids`` has ended (or is a zombie left to be reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and process_state(pid) != "Z" for pid in pids):
            return True
        time.sleep(0.02)
    return False


def process_state(pid: int) -> str:
    """The state letter of ``/proc/PID/stat`` (R, S, Z...); Z for a process already gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (to show a refused command changed nothing)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def damage_tensor_data(path: Path) -> None:
    """Change two bytes in the middle of a torch file's largest tensor, keeping its size (a bad disk or a copy gone
    wrong): ``torch.load`` alone reads such a file without a word."""
    with zipfile.ZipFile(path) as archive:
        entry = max((e for e in archive.infolist() if "/data/" in e.filename), key=lambda e: e.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26 : entry.header_offset + 30])
    middle = entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2
    data[middle] ^= 0xFF
    data[middle + 1] ^= 0x0F
    path.write_bytes(data)


def write_images(folder: Path, count: int, size: tuple[int, int] = (12, 10), nested: bool = True) -> Path:
    """``count`` random RGB images (PNG and JPEG, every other one in a sub-folder when ``nested``) in ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        where = folder / f"class{index % 2}" if nested and index % 2 else folder
        where.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(where / f"image{index}.{'png' if index % 3 else 'jpg'}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def smoke_fid_cache(tmp_path_factory):
    """Atari-FID's classifier for 16x16 frames, trained once per session with a smoke-size recipe into a temporary
    cache that every launcher subprocess finds through $IGNITE_BOOK_CACHE (the real recipe takes tens of seconds).
    The file is then labelled with the real recipe: a cache made by another recipe is rebuilt on load."""
    import tasks.atari_fid as atari_fid
    from runner.files import save_atomically

    cache = tmp_path_factory.mktemp("fid-cache")
    os.environ["IGNITE_BOOK_CACHE"] = str(cache)
    real_recipe = dict(atari_fid.RECIPE)
    atari_fid.RECIPE.update(train_per_game=48, valid_per_game=16, epochs=2)
    try:
        atari_fid.load_frame_classifier(16, say=lambda message: None)
    finally:
        atari_fid.RECIPE.clear()
        atari_fid.RECIPE.update(real_recipe)
    path = atari_fid.extractor_path(16)
    save_atomically({**torch.load(path, weights_only=True), "recipe": real_recipe}, path)
    return cache


@pytest.fixture(scope="session")  # a builder without state: module fixtures may use it
def tiny_settings():
    """AtariGanSettings at smoke size for in-process runs."""
    from runner.settings import make_settings
    from tasks.atari_gan import AtariGanSettings

    def build(output_dir: Path, **overrides):
        values = dict(
            dev="cpu",
            image_size=16,
            filters=4,
            batch_size=4,
            latent_size=8,
            seed=1,
            max_iters=20,
            log_every=1,
            checkpoint_every=5,
            image_every=10,
            eval_every=0,
            fid_samples=64,
            output_dir=str(output_dir),
        )
        return make_settings(AtariGanSettings, {**values, **overrides})

    return build


ALL_HPARAMS_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def hparams_tab(logdir) -> dict[str, dict]:
    """The session groups TensorBoard's HParams tab shows for ``logdir``: name -> hparams, metrics, status; read by
    TensorBoard's own HParams plugin, as its web page asks for them."""
    import json

    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug.test import EnvironBuilder

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    route = hparams_plugin.HParamsPlugin(context).get_plugin_apps()["/session_groups"]
    body = {"experimentName": "", "allowedStatuses": ALL_HPARAMS_STATUSES, "colParams": []}
    body |= {"startIndex": 0, "sliceSize": 99}
    environ = EnvironBuilder(method="POST", path="/session_groups", json=body).get_environ()
    statuses = []
    answer = json.loads(b"".join(route(environ, lambda status, headers: statuses.append(status))))
    assert statuses == ["200 OK"]
    return {
        group["name"]: {
            "hparams": group["hparams"],
            "metrics": {value["name"]["tag"]: value["value"] for value in group["metricValues"]},
            "status": group["sessions"][0]["status"],
        }
        for group in answer.get("sessionGroups", [])
    }


def engine_factory_with(monkeypatch, at_iteration: int, act) -> None:
    """The GAN trainer, with ``act(engine, output)`` at one iteration (a NaN, a signal)."""
    import tasks.gan as gan_run

    real_factory = gan_run.create_gan_trainer

    def factory(*args, **kwargs):
        engine = real_factory(*args, **kwargs)
        step = engine._process_function

        def step_with_act(engine, batch):
            output = step(engine, batch)
            return act(engine, output) if engine.state.iteration == at_iteration else output

        engine._process_function = step_with_act
        return engine

    monkeypatch.setattr(gan_run, "create_gan_trainer", factory)
