"""TensorBoard's HParams for a run, in the run's own event files, without tensorflow.

    write_session_start(tb_logger.writer, hparam_values(settings_dict(settings)))   # when the run starts
    write_outcome(tb_logger.writer, iteration, "complete", {"fid": 9.3})            # when it ends

``tensorboard --logdir SWEEP_DIR`` then lists every trial in the HParams tab, each linked to its own scalars:
complete, stopped, pruned and failed ones alike. Two choices follow from how TensorBoard reads these records:

- torch's ``SummaryWriter.add_hparams`` writes a separate sub-run (pytorch#32651) and tensorboard's own
  ``hparams.summary`` needs tensorflow, so the plugin's records are built here from its protos, as torch does.
- TensorBoard keeps the *first* record of each hparams tag in a run, and a resumed run writes new event files into the
  same folder. So the session's status, which cannot change once written, is written only for the final states:
  ``complete`` (SUCCESS) and ``failed`` (FAILURE); TensorBoard has no "pruned", and a stopped run may go on. The state
  itself is the scalar ``outcome/state`` (the last value counts, so a stopped run that is resumed and completes shows
  "complete"): 1 complete, 2 stopped, 3 pruned, 4 failed. The best evaluation score is ``outcome/best_<metric>``.

No experiment record is written: TensorBoard then builds one from all the runs it finds, so a folder holding runs of
several tasks shows the union of their hyperparameters.
"""

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.writer import FileWriter

STATES = {"complete": 1, "stopped": 2, "pruned": 3, "failed": 4}  # the values of outcome/state
STATE_TAG = "outcome/state"
FINAL_STATUS = {"complete": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE}
NOT_HYPERPARAMETERS = {"output_dir", "resume", "data_dir"}  # where a run is, not what it is


def hparam_values(settings: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """A run's settings as HParams values: numbers, text and booleans as they are, lists as text (``Pong,Breakout``),
    paths and unset values left out."""
    values: dict[str, bool | int | float | str] = {}
    for name, value in settings.items():
        if name in NOT_HYPERPARAMETERS or value is None or value == "":
            continue
        values[name] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
    return values


def _plugin_summary(tag: str, data: HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def session_start(hparams: Mapping[str, bool | int | float | str]) -> Summary:
    start = SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        if isinstance(value, bool):  # before int: a bool is an int to Python
            start.hparams[name].bool_value = value
        elif isinstance(value, int | float):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = str(value)
    return _plugin_summary(metadata.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=start))


def event_file(writer: SummaryWriter) -> FileWriter:
    """The writer's own event file, where a summary proto goes as it is (``add_scalar`` and the others make theirs)."""
    if writer.file_writer is None:
        raise ValueError(f"the TensorBoard writer of {writer.log_dir} is closed")
    return writer.file_writer


def write_session_start(writer: SummaryWriter, hparams: Mapping[str, bool | int | float | str]) -> None:
    """At every launch (only the first record counts): a run killed before its writer flushed still gets one."""
    event_file(writer).add_summary(session_start(hparams))
    writer.flush()


def write_outcome(writer: SummaryWriter, step: int, state: str, best: Mapping[str, float | None]) -> None:
    """The run's state and best scores at ``step``, and its session's status when the state is final."""
    writer.add_scalar(STATE_TAG, STATES[state], step)
    for name, value in best.items():
        if value is not None:
            writer.add_scalar(f"outcome/best_{name}", value, step)
    if state in FINAL_STATUS:
        end = SessionEndInfo(status=FINAL_STATUS[state], end_time_secs=time.time())
        event_file(writer).add_summary(
            _plugin_summary(metadata.SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=end))
        )
    writer.flush()


@dataclass(frozen=True)
class RecordedOutcome:
    """What a run's event files say of how it went: its last ``outcome/state`` (None while no process has ended it:
    running, or killed) and its wall time, the sum over its sessions (event files) of first to last event."""

    state: str | None
    wall_seconds: float


def read_outcome(run_dir: Path) -> RecordedOutcome:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    names = {code: name for name, code in STATES.items()}
    state, state_time, wall = None, -math.inf, 0.0
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        first = last = None
        for event in EventFileLoader(str(path)).Load():
            first = event.wall_time if first is None else first
            last = event.wall_time
            for value in event.summary.value:
                if value.tag == STATE_TAG and event.wall_time >= state_time:
                    number = value.simple_value if value.HasField("simple_value") else make_ndarray(value.tensor)
                    state, state_time = names.get(int(number)), event.wall_time
        wall += (last - first) if first is not None else 0.0
    return RecordedOutcome(state, wall)
