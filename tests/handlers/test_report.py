from ignite.engine import Engine, Events

from handlers.report import attach_progress


def test_plain_report_lines_show_every_output_key_and_the_named_metrics(capsys):
    engine = Engine(lambda engine, batch: {"loss_a": batch, "loss_b": 2 * batch})

    @engine.on(Events.ITERATION_COMPLETED)
    def fake_metric(engine):
        engine.state.metrics["speed"] = 10.0
        engine.state.metrics["hidden"] = 1.0

    attach_progress(engine, every=2, metric_names=["speed"], interactive=False)
    engine.run([1.0, 2.0, 3.0, 4.0], max_iters=4, epoch_length=4)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["iter 2/4 | loss_a 2 | loss_b 4 | speed 10", "iter 4/4 | loss_a 4 | loss_b 8 | speed 10"]


def test_a_terminal_gets_ignites_progress_bar_instead_of_lines(capsys):
    engine = Engine(lambda engine, batch: {"loss": batch})
    attach_progress(engine, every=1, metric_names=[], interactive=True)
    engine.run([1.0, 2.0], max_iters=2, epoch_length=2)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "[2/2]" in captured.err
