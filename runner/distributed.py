"""Training on several processes with ``ignite.distributed``: ``--nproc-per-node N`` or ``torchrun``.

    python scripts/atari_gan.py --nproc-per-node 2 ...               # spawned here through idist.Parallel
    torchrun --standalone --nproc-per-node 2 scripts/atari_gan.py ...  # torchrun's processes join the same way
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id RUN \
        scripts/atari_gan.py ... --output-dir /shared/runs/x          # on each of two machines (docs/distributed.md)

Every rank runs the same task function; the rules that keep N processes in step:

- ``--batch-size`` is the global batch, split evenly over the ranks (as ``idist.auto_dataloader`` does);
- each rank draws its own data and noise from its own seed (``rank_seed``); DDP keeps the weights equal;
- the numbers a process function reports are averaged over the ranks, so every rank logs, stops on NaN and
  judges an evaluation alike;
- rank 0 owns the run directory: it writes config, logs, TensorBoard, sample sheets and checkpoints; a checkpoint
  holds every rank's data-stream and RNG state (``PerRank``), and a resume gives each rank its own back;
- a decision taken on one rank (a signal that reached one process, a failed checkpoint write) is taken by all at
  the same point (``handlers.stop.GracefulStop``, ``agree``), because a rank that stopped alone would leave the
  others waiting in a collective;
- a checkpoint records the run's topology (nodes, threads per process): both change the numbers' last bits, so a
  resume on another one is refused (``check_topology``).

With one process none of this changes anything: no wrapper, no collective, the checkpoint layout of a plain run.
"""

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch

from runner.checkpoint_files import ResumePoint, load_checkpoint
from runner.errors import EXIT_USER_ERROR, UserError, quiet_engine_error_logs
from runner.machine import set_parent_death_signal, usable_cores
from runner.rundir import RunDirectory


class RankStopped(UserError):
    """Another rank failed; its message is shown there."""


class ProcessFailed(UserError):
    """A training process died (killed, out of memory): the run stopped, its checkpoints are kept."""

    exit_code = 1


def under_torchrun() -> bool:
    """Started by torchrun (or any launcher that sets the ``torch.distributed`` environment) with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def node_count() -> int:
    """The nodes this launch runs on: torchrun's agents (``GROUP_WORLD_SIZE``), 1 for processes spawned here."""
    return int(os.environ.get("GROUP_WORLD_SIZE", "1")) if under_torchrun() else 1


def world_size() -> int:
    return idist.get_world_size()


def is_main_process() -> bool:
    return idist.get_rank() == 0


def threads_per_process(local_processes: int) -> int:
    """A CPU rank's threads: ``OMP_NUM_THREADS`` when set (the user's, or torchrun's 1 on a node of several
    processes; torch read it when it started), else this machine's cores shared out over its processes."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, usable_cores() // local_processes)


def rank_seed(seed: int) -> int:
    """This rank's seed: ``seed`` itself on rank 0 (a one-process run is unchanged), a derived one elsewhere."""
    rank = idist.get_rank()
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rank_batch_size(batch_size: int) -> int:
    """This rank's share of the global batch (``check_split`` refused a batch that does not divide, before the
    ranks started)."""
    return batch_size // world_size()


def rank_device(device: torch.device) -> torch.device:
    """The device this process runs on, made CUDA's current one: each rank of a node takes its own GPU, one process
    the one ``--dev`` names. (Left on GPU 0, bf16 support would be asked of it, ``synchronize`` would wait on it, and
    a context would be made on it.)"""
    if device.type != "cuda":
        return device
    if world_size() > 1:
        device = torch.device("cuda", idist.get_local_rank())
    elif device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    return device


def wrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``module`` when there are several ranks, else ``module``. The module must
    already be on this rank's device, which DDP is told (``idist.auto_model`` would move it to a GPU wherever CUDA
    is available, a CPU run's too). DDP copies rank 0's weights to every rank."""
    if world_size() == 1:
        return module
    device = next(module.parameters()).device
    # find_unused_parameters keeps DDP from re-ordering its gradient buckets after the first backward, which it
    # does once per process: a resumed process would reduce its first step in another bucket order than the
    # uninterrupted run, and with 3 or more ranks a float sum in another order is another number.
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )


def hide_cuda_from_cpu_ranks(dev: str) -> None:
    """A CPU run's ranks see no GPU. Ignite's process group calls ``torch.cuda.set_device(local_rank)`` wherever
    CUDA is available, whatever the backend: on a one-GPU machine rank 1 dies of "invalid device ordinal". Set
    before anything in the process asks CUDA (torch reads it once); spawned ranks inherit it."""
    if not dev.startswith("cuda"):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def agree(error: UserError | None) -> None:
    """A point all ranks pass together: if any rank failed (``error``), every rank stops here. The failing rank's
    message is the one shown; the others stop quietly rather than wait for it in a collective that never comes."""
    if world_size() == 1:
        if error is not None:
            raise error
        return
    failed = idist.all_reduce(torch.tensor([0.0 if error is None else 1.0]), op="MAX")
    if error is not None:
        raise error
    if failed.item():
        raise RankStopped("another process of the run failed")


@contextmanager
def open_run_directory(path: Path, continuing: bool) -> Iterator[RunDirectory]:
    """``RunDirectory.open`` on rank 0, which owns the folder (its lock, its files); the other ranks get its paths,
    once rank 0 has opened it, and stop with it if it could not."""
    run, error = None, None
    if is_main_process():
        try:
            run = RunDirectory.open(path, continuing=continuing)
        except UserError as refused:
            error = refused
    agree(error)
    run = run or RunDirectory(Path(path), lock_fd=-1)
    try:
        yield run
    finally:
        run.close()


class PerRank:
    """An object with ``state_dict``/``load_state_dict`` (a data stream, the RNGs) whose state differs per rank.

    Saved, it holds every rank's state (``{"ranks": [...]}``, gathered on every rank: a checkpoint is written by
    rank 0) and the topology that made them (``{"topology": {"nodes": 2, "threads": [per rank]}}``, read back by
    ``check_topology``); loaded, each rank takes its own. ``per_rank`` wraps only when there are several ranks, so
    one-process checkpoints keep their layout.
    """

    def __init__(self, obj: Any):
        self.obj = obj

    def state_dict(self) -> dict[str, Any]:
        gathered = gather_objects((self.obj.state_dict(), torch.get_num_threads()))
        topology = {"nodes": node_count(), "threads": [threads for _, threads in gathered]}
        return {"ranks": [state for state, _ in gathered], "topology": topology}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = len(saved_ranks(state))
        if saved != world_size():
            raise UserError(
                f"the checkpoint was written by {saved} process(es), this run has {world_size()}; "
                f"resume it with --nproc-per-node {saved}"
            )
        self.obj.load_state_dict(state["ranks"][idist.get_rank()])


def per_rank(obj: Any) -> Any:
    return PerRank(obj) if world_size() > 1 else obj


def saved_ranks(state: Any) -> list[Any]:
    """Each rank's part of a saved state, in rank order: a ``PerRank``'s, or a one-process run's one state."""
    return state["ranks"] if isinstance(state, dict) and "ranks" in state else [state]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (our own processes' states: tensors, numbers, bytes, dicts)."""
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def checked_world(settings: Any, resume: ResumePoint | None) -> int:
    """The number of processes this launch trains with, refused when a checkpoint was written by another number."""
    wanted = int(os.environ["WORLD_SIZE"]) if under_torchrun() else settings.nproc_per_node
    if resume is not None:
        saved = resume.settings.get("nproc_per_node", 1)
        if saved != wanted:
            nodes = (saved_topology(resume) or {}).get("nodes", 1)
            raise UserError(f"{resume.path} was written by {saved} process(es); resume it with {launch(saved, nodes)}")
    if under_torchrun() and settings.nproc_per_node not in (1, wanted):
        raise UserError(f"--nproc-per-node {settings.nproc_per_node}: under torchrun, torchrun's own flag decides")
    return wanted


def launch(processes: int, nodes: int) -> str:
    """The launcher flags that start ``processes`` processes on ``nodes`` nodes (for a refusal's hint)."""
    if nodes > 1:
        return f"torchrun --nnodes {nodes} --nproc-per-node {processes // nodes} (on each node)"
    return f"torchrun --nproc-per-node {processes}" if under_torchrun() else f"--nproc-per-node {processes}"


def saved_topology(resume: ResumePoint) -> dict[str, Any] | None:
    """The nodes and per-rank thread counts a checkpoint was written with (``PerRank``); None for a one-process
    checkpoint or one written before they were recorded."""
    for value in resume.state.values():
        if isinstance(value, dict) and isinstance(value.get("topology"), dict):
            return value["topology"]
    return None


def check_topology(resume: ResumePoint | None, nodes: int, threads: list[int], dev: str) -> None:
    """Refuse a resume on another node count, or (on CPU) other threads per process, than the checkpoint's.

    Refused, not warned about: neither changes what the checkpoint can hold, only the numbers' last bits (a node's
    processes reduce among themselves first on NCCL; each process's thread count splits its CPU kernels' sums), so
    a resume that went on would silently break the exact-resume promise. And either can always be matched, on any
    machines: torchrun runs several nodes on one machine, and ``OMP_NUM_THREADS`` sets any thread count. The thread
    count is not compared when the run or the checkpoint is on a GPU: the CPU's threads do none of its arithmetic.
    A checkpoint written before the topology was recorded resumes unchecked."""
    saved = saved_topology(resume) if resume is not None else None
    if saved is None:
        return
    processes = len(threads)
    if saved["nodes"] != nodes:
        raise UserError(
            f"{resume.path} was written on {saved['nodes']} node(s), this launch has {nodes}: the node layout "
            f"changes the numbers; resume it with {launch(processes, saved['nodes'])}"
        )
    if dev == "cpu" and resume.settings.get("dev", "cpu") == "cpu" and saved["threads"] != threads:
        same = len(set(saved["threads"])) == 1
        hint = f"OMP_NUM_THREADS={saved['threads'][0]}" if same else "OMP_NUM_THREADS set per node to match"
        raise UserError(
            f"{resume.path} was written with {shown(saved['threads'])} thread(s) per process, this launch has "
            f"{shown(threads)}: the thread count changes the numbers; resume it with {hint}"
        )


def shown(threads: list[int]) -> str:
    """``2`` when every rank has 2 threads, else the list by rank."""
    return str(threads[0]) if len(set(threads)) == 1 else f"{threads} (by rank)"


def agreed_topology(resume: ResumePoint | None, dev: str) -> None:
    """``check_topology`` on every rank, with every rank's thread count: rank 0's refusal is the one shown."""
    threads = gather_objects(torch.get_num_threads())
    error = None
    try:
        check_topology(resume, node_count(), threads, dev)
    except UserError as refused:
        error = refused
    agree(error if is_main_process() else None)


def check_split(settings: Any, ranks: int) -> None:
    """What each rank checks for itself, checked once before any process starts (one line, not one per rank): the
    global batch divides over the ranks, and whatever the task's settings say with their own ``check_ranks``."""
    if settings.batch_size % ranks:
        raise UserError(f"--batch-size {settings.batch_size}: must divide evenly over {ranks} processes")
    settings.check_ranks(ranks)


def run_ranks(train: Callable[[Any, Any], Any], settings: Any, resume: ResumePoint | None, prog: str) -> int:
    """``train(settings, checkpoint).exit_code`` on one process, on ``settings.nproc_per_node`` spawned ones, or
    as this process's rank of torchrun's. Returns the run's exit code; a rank's user error is raised here, once."""
    ranks = checked_world(settings, resume)
    if ranks == 1:
        return train(settings, resume).exit_code
    settings = replace(settings, nproc_per_node=ranks)
    check_split(settings, ranks)
    hide_cuda_from_cpu_ranks(settings.dev)
    quiet_launcher_logs()
    # DDP's C++ side warns that find_unused_parameters found none (wrap_model says why it is on); the spawned ranks
    # read this when torch loads. (torchrun's ranks have loaded torch by now: there it warns once per rank.)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    if under_torchrun():  # this process is one rank; torchrun gathers the exit codes
        report = OwnOutcome(prog)
        with idist.Parallel(backend=backend_for(settings.dev)) as parallel:
            parallel.run(_rank_main, train, settings, resume, prog, report)
        return report.exit_code
    if settings.dev.startswith("cuda") and torch.cuda.device_count() < ranks:
        raise UserError(f"--nproc-per-node {ranks}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    check_topology(resume, 1, [threads_per_process(ranks)] * ranks, settings.dev)  # one node, before any starts
    outcomes = multiprocessing.get_context("spawn").SimpleQueue()  # each rank puts (rank, exit code, message)
    # Each rank reads the checkpoint itself: tensors handed to a spawned process travel in shared memory, and the
    # ranks' optimizers would then update one another's states (each Adam step counted once per rank).
    checkpoint_path = resume.path if resume is not None else None
    try:
        with (
            forwarding_signals(),
            idist.Parallel(
                backend=backend_for(settings.dev), nproc_per_node=ranks, start_method="spawn", master_port=free_port()
            ) as parallel,
        ):
            parallel.run(_rank_main, train, settings, checkpoint_path, prog, outcomes)
    except torch.multiprocessing.ProcessExitedException as error:  # killed: spawn stopped the others
        reported = drain(outcomes)
        if reported.get(0, (None, None))[0] is not None and reported[0][1] is None:  # rank 0 had finished
            print(
                f"{prog}: note: training process {error.error_index} {exit_reason(error.exit_code)} while the "
                "processes were shutting down, after the run had ended",
                file=sys.stderr,
            )
            return reported[0][0]
        raise ProcessFailed(
            f"training process {error.error_index} {exit_reason(error.exit_code)}; "
            f"the run's checkpoints are kept: resume with --resume {settings.output_dir}"
        ) from None
    return run_outcome(drain(outcomes))


def drain(outcomes: Any) -> dict[int, tuple[int | None, str | None]]:
    reported = {}
    while not outcomes.empty():
        rank, exit_code, message = outcomes.get()
        reported[rank] = (exit_code, message)
    return reported


def run_outcome(reported: dict[int, tuple[int | None, str | None]]) -> int:
    """The run's exit code from its ranks' reports; the first rank's message (rank 0's if it has one) is raised."""
    for rank in sorted(reported):
        exit_code, message = reported[rank]
        if message == INTERRUPTED:
            raise KeyboardInterrupt
        if message is not None:
            error = UserError(message)
            error.exit_code = exit_code
            raise error
    if reported.get(0, (None, None))[0] is None:
        raise ProcessFailed("the training processes stopped without a result (see the lines above)")
    return reported[0][0]


class OwnOutcome:
    """A torchrun rank's report: its own exit code, its message printed here (torchrun gathers the processes)."""

    def __init__(self, prog: str):
        self.prog, self.exit_code = prog, 1

    def put(self, outcome: tuple[int, int | None, str | None]) -> None:
        rank, exit_code, message = outcome
        self.exit_code = 1 if exit_code is None else exit_code
        if message is not None:
            where = f" (rank {rank})" if rank else ""
            print(f"{self.prog}: error{where}: {message}", file=sys.stderr, flush=True)


INTERRUPTED = "interrupted"  # a second Ctrl-C: stopped at once, the last checkpoint written is kept


def exit_reason(exit_code: int) -> str:
    if exit_code < 0:
        return f"was killed by {signal.Signals(-exit_code).name}"
    return f"exited with code {exit_code}"


def _rank_main(
    local_rank: int, train: Callable[[Any, Any], Any], settings: Any, resume: Any, prog: str, outcomes: Any
) -> None:
    """One rank. It reports ``(rank, exit code, message)`` to ``outcomes`` and returns normally whatever happens,
    so that the launcher never tears the others down while rank 0 is still writing, and shows one message.
    ``resume`` is a ``ResumePoint`` under torchrun, a path when spawned here (read in this process)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher ignores Ctrl-C; its ranks must not
    if not isinstance(outcomes, OwnOutcome):
        stop_with_the_launcher()
    quiet_launcher_logs()  # a spawned rank is a new interpreter
    quiet_engine_error_logs()
    exit_code, message = None, None  # None: no result (another process went away first)
    try:
        if isinstance(resume, Path):
            resume = ResumePoint(resume, load_checkpoint(resume))
        if settings.dev == "cpu":  # N processes share the cores instead of each starting a thread per core
            torch.set_num_threads(threads_per_process(idist.get_nproc_per_node()))
        if isinstance(outcomes, OwnOutcome):  # torchrun's: the nodes are known now (spawned: checked before)
            agreed_topology(resume, settings.dev)
        # torchrun's ranks each made their own default output_dir (a timestamp): rank 0's is the run's.
        settings = replace(settings, output_dir=idist.broadcast(settings.output_dir, src=0, safe_mode=True))
        exit_code = train(settings, resume).exit_code
        idist.barrier()  # end together: none tears its process group down while another still writes
    except RankStopped:  # another rank failed and says why
        exit_code = EXIT_USER_ERROR
    except UserError as error:
        exit_code, message = error.exit_code, str(error)
    except KeyboardInterrupt:
        exit_code, message = 130, INTERRUPTED
    except RuntimeError as error:
        if not peer_lost(error):
            raise
        # Another process died mid-collective (killed, or failed and exited): its report is the one to read.
    outcomes.put((idist.get_rank(), exit_code, message))


LAUNCHER_POLL_SECONDS = 0.5


def stop_with_the_launcher() -> None:
    """A spawned rank gets one SIGTERM when the launcher dies (say, ``kill -9``): the ranks then stop together at an
    iteration boundary with a checkpoint, instead of training on unseen, holding the run directory's lock.

    torch's spawn asks the kernel for a SIGINT on the parent's death instead, but the kernel sends it once per
    thread of the dying launcher, and a second signal means "stop at once, no checkpoint". A watcher thread sends
    one signal."""
    launcher = multiprocessing.parent_process()
    if launcher is None:
        return
    set_parent_death_signal(0)

    def watch() -> None:
        while os.getppid() == launcher.pid:
            time.sleep(LAUNCHER_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def peer_lost(error: RuntimeError) -> bool:
    """A collective failed because another rank's process went away (gloo and NCCL say so in their messages)."""
    signs = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")
    return any(sign in str(error) for sign in signs)


def backend_for(dev: str) -> str:
    return "nccl" if dev.startswith("cuda") else "gloo"


def free_port() -> int:
    """A port for the ranks' rendezvous on loopback (ignite's fixed default would clash between two runs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quiet_launcher_logs() -> None:
    """ignite's launcher and auto_model log their parameters at INFO on every start, once per rank; the run's own
    report says what matters."""
    for name in ("ignite.distributed.launcher.Parallel", "ignite.distributed.auto.auto_model"):
        logging.getLogger(name).addFilter(lambda record: record.levelno >= logging.WARNING)
    # "Terminating process N via signal SIGTERM": the launcher's own line says which process failed and why.
    logging.getLogger("torch.multiprocessing.spawn").addFilter(lambda record: "Terminating process" not in record.msg)


class forwarding_signals:  # noqa: N801 (a context manager, named as one)
    """For the block: Ctrl-C ignored here (it reaches the ranks too: they stop together at an iteration boundary
    and rank 0 writes the checkpoint), and a SIGTERM sent to this process passed on to the ranks."""

    def __enter__(self) -> None:
        self.previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._forward),
        }

    @staticmethod
    def _forward(signum: int, _: FrameType | None) -> None:
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
