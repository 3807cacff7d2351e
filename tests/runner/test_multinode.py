"""Training on several machines: two ``torchrun`` nodes on loopback, one process each, sharing one run directory (as
two machines share it on a shared file system). Each launch starts two agents and two ranks: a few seconds each, so
the runs are few and share one reference.
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, TINY, losses, run_launcher, tree_digest
from handlers.metrics_log import read_records
from runner.checkpoint_files import ResumePoint
from runner.distributed import check_topology, checked_world, free_port
from runner.errors import UserError

NODE = [*TINY, "--seed", "1", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "10"]


def two_nodes(log_dir: Path, *args: str) -> list[subprocess.CompletedProcess]:
    """``scripts/atari_gan.py ARGS`` on two torchrun nodes of one process each, started at once as on two machines
    (the c10d rendezvous on a free loopback port; torchrun ignores ``--node-rank`` with it and ranks the nodes
    itself). One thread per process: two nodes on one 2-core machine would otherwise take both cores each."""
    port, run_id = free_port(), uuid.uuid4().hex[:8]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    torchrun += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [*torchrun, str(REPO / "scripts" / "atari_gan.py"), *args]
    logs = [(log_dir / f"node{node}.out", log_dir / f"node{node}.err") for node in range(2)]
    started = []
    for out, err in logs:
        with out.open("w") as stdout, err.open("w") as stderr:  # the child keeps its own copies
            started.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=REPO, env=env))
    codes = [process.wait(timeout=240) for process in started]
    return [
        subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
        for code, (out, err) in zip(codes, logs, strict=True)
    ]


def succeeded(nodes: list[subprocess.CompletedProcess]) -> None:
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(node.stderr[-3000:] for node in nodes)


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory) -> Path:
    """The reference: 20 iterations on two nodes, uninterrupted."""
    base = tmp_path_factory.mktemp("nodes")
    succeeded(two_nodes(base / "logs", *NODE, "--max-iters", "20", "--output-dir", str(base / "N")))
    return base / "N"


def test_two_nodes_stopped_at_10_and_resumed_to_20_give_the_uninterrupted_numbers(two_node_run, tmp_path):
    run_dir = tmp_path / "R"
    succeeded(two_nodes(tmp_path / "first", *NODE, "--max-iters", "10", "--output-dir", str(run_dir)))
    checkpoint = torch.load(run_dir / "checkpoints" / "checkpoint_10.pt", weights_only=True)
    assert checkpoint["settings"]["nproc_per_node"] == 2  # the world: 2 nodes x 1 process
    assert checkpoint["rng"]["topology"] == {"nodes": 2, "threads": [1, 1]}
    resumed = two_nodes(tmp_path / "resumed", "--resume", str(run_dir), "--max-iters", "20")  # both read the file
    succeeded(resumed)
    assert losses(run_dir, range(1, 21)) == losses(two_node_run, range(1, 21))
    # One writer, whichever node the rendezvous made rank 0: each iteration logged once per launch.
    logged = [r["iteration"] for r in read_records(two_node_run / "metrics.jsonl") if "loss_gen" in r]
    assert logged == list(range(1, 21))
    assert sum("finished at iteration 20" in node.stderr for node in resumed) == 1


def test_a_two_node_checkpoint_resumed_on_one_node_is_refused_in_one_line(two_node_run, tmp_path):
    run_dir = shutil.copytree(two_node_run, tmp_path / "C")
    before = tree_digest(run_dir)
    result = run_launcher("--resume", str(run_dir), "--max-iters", "30")  # the saved 2 processes, on this one node
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors == [
        f"atari_gan.py: error: {run_dir}/checkpoints/checkpoint_20.pt was written on 2 node(s), this launch has 1: "
        "the node layout changes the numbers; resume it with torchrun --nnodes 2 --nproc-per-node 1 (on each node)"
    ]
    assert tree_digest(run_dir) == before


def saved(nodes: int, threads: list[int], dev: str = "cpu") -> ResumePoint:
    state = {"settings": {"nproc_per_node": len(threads), "dev": dev}, "trainer": {"iteration": 10}}
    state["rng"] = {"ranks": [{} for _ in threads], "topology": {"nodes": nodes, "threads": threads}}
    return ResumePoint(Path("run/checkpoints/checkpoint_10.pt"), state)


def test_a_resume_on_another_node_count_or_thread_count_is_refused_and_an_old_checkpoint_is_not():
    two_nodes_one_thread = saved(nodes=2, threads=[1, 1])
    one_node = r"on 2 node\(s\), this launch has 1: .* resume it with torchrun --nnodes 2 --nproc-per-node 1 "
    with pytest.raises(UserError, match=one_node):
        check_topology(two_nodes_one_thread, nodes=1, threads=[1, 1], dev="cpu")
    with pytest.raises(UserError, match=r"with 1 thread\(s\) per process, this launch has 2: .* OMP_NUM_THREADS=1$"):
        check_topology(two_nodes_one_thread, nodes=2, threads=[2, 2], dev="cpu")
    with pytest.raises(UserError, match=r"with \[2, 4\] \(by rank\) .* has 4: .* OMP_NUM_THREADS set per node"):
        check_topology(saved(nodes=2, threads=[2, 4]), nodes=2, threads=[4, 4], dev="cpu")
    check_topology(two_nodes_one_thread, nodes=2, threads=[1, 1], dev="cpu")  # the same topology
    check_topology(two_nodes_one_thread, nodes=2, threads=[8, 8], dev="cuda")  # the GPU does the arithmetic
    check_topology(saved(nodes=2, threads=[8, 8], dev="cuda:0"), nodes=2, threads=[1, 1], dev="cpu")
    unrecorded = ResumePoint(Path("old.pt"), {"settings": {"nproc_per_node": 2}, "rng": {"ranks": [{}, {}]}})
    check_topology(unrecorded, nodes=1, threads=[2, 2], dev="cpu")  # written before the topology was recorded
    check_topology(None, nodes=2, threads=[1, 1], dev="cpu")


def test_a_changed_process_count_names_the_saved_node_layout():
    four_spawned = SimpleNamespace(nproc_per_node=4)
    with pytest.raises(UserError, match=r"by 2 process\(es\); resume it with torchrun --nnodes 2 --nproc-per-node 1"):
        checked_world(four_spawned, saved(nodes=2, threads=[1, 1]))
