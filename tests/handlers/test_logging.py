from ignite.engine import Engine
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handlers.logging import attach_running_averages, attach_tensorboard


def run_logged(log_dir, losses, resumed_at=None):
    engine = Engine(lambda engine, batch: {"loss": batch})
    if resumed_at is not None:
        engine.load_state_dict({"iteration": resumed_at, "epoch_length": len(losses) + resumed_at, "max_iters": 6})
    attach_running_averages(engine, ["loss"])
    logger = attach_tensorboard(engine, log_dir, every=1, resumed_at=resumed_at)
    engine.run(losses)
    logger.close()
    return engine


def test_running_average_metric_is_named_after_the_output_key():
    engine = Engine(lambda engine, batch: {"loss": batch, "other": 0.0})
    averages = attach_running_averages(engine, ["loss"])
    engine.run([1.0, 3.0], max_epochs=1)
    assert set(averages) == {"avg_loss"}
    assert 1.0 < engine.state.metrics["avg_loss"] < 3.0


def test_resumed_run_replaces_the_interrupted_runs_points_after_the_checkpoint(tmp_path):
    run_logged(tmp_path, [1.0, 2.0, 3.0, 4.0, 5.0])  # the first run got to 5, its checkpoint was at 3
    run_logged(tmp_path, [40.0, 50.0, 60.0], resumed_at=3)
    scalars = EventAccumulator(str(tmp_path)).Reload().Scalars("train/loss")
    assert [(event.step, event.value) for event in scalars] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
        (5, 50.0),
        (6, 60.0),
    ]
