"""The GAN's moving average of G (Ignite's EMAHandler): in every checkpoint, measured beside G, judging the run,
exact on resume; and the run's progress.gif."""

import pytest
import torch
from PIL import Image

import tasks.atari_gan as task
from handlers.metrics_log import records_by_iteration
from runner.checkpoint_files import find_checkpoint, load_checkpoint

EVALUATED = {"max_iters": 20, "eval_every": 10, "image_every": 5}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_settings):
    """The issue's run: 20 iterations at tiny sizes, Atari-FID every 10."""
    run = tmp_path_factory.mktemp("ema") / "straight"
    assert task.train(tiny_settings(run, **EVALUATED, checkpoint_every=1, keep_checkpoints=30)).exit_code == 0
    return run


def test_both_generators_are_measured_with_the_name_of_what_measured_them(straight):
    records = records_by_iteration(straight / "metrics.jsonl")
    evaluated = {iteration: record for iteration, record in records.items() if "fid" in record}
    assert sorted(evaluated) == [10, 20]
    for record in evaluated.values():
        assert record["fid"] > 0 and record["fid_ema"] > 0 and record["fid"] != record["fid_ema"]
        assert record["fid_classifier"].startswith("atari-fid-v1/")


def test_the_average_follows_decay_and_is_in_every_checkpoint_and_the_best(straight, tiny_settings):
    decay = tiny_settings(straight).ema_decay
    before, after = (load_checkpoint(straight / "checkpoints" / f"checkpoint_{i}.pt") for i in (11, 12))
    generator, ema_before, ema_after = after["generator"], before["generator_ema"], after["generator_ema"]
    for name, value in ema_after.items():
        if "running" in name or "num_batches" in name:  # BatchNorm's statistics are G's own
            assert torch.equal(value, generator[name])
        else:
            assert torch.allclose(value, decay * ema_before[name] + (1 - decay) * generator[name], atol=1e-7)
    (best,) = (straight / "checkpoints").glob("best_fid_*.pt")
    assert "generator_ema" in torch.load(best, weights_only=True)


def test_the_average_judges_the_run(straight):
    records = records_by_iteration(straight / "metrics.jsonl").values()
    best = min((r for r in records if "fid_ema" in r), key=lambda r: r["fid_ema"])
    (best_file,) = (straight / "checkpoints").glob("best_fid_*.pt")
    assert best_file.name == f"best_fid_{best['iteration']}.pt"


def test_stopped_at_10_and_resumed_to_20_gives_the_same_losses_and_fid_ema(straight, tiny_settings, tmp_path):
    run = tmp_path / "stopped"
    assert task.train(tiny_settings(run, **{**EVALUATED, "max_iters": 10})).exit_code == 0
    resume = find_checkpoint(run)
    assert task.train(tiny_settings(run, **EVALUATED), resume).exit_code == 0
    keys = ("loss_gen", "loss_dis", "avg_loss_gen", "avg_loss_dis", "fid", "fid_ema")

    def numbers(path):
        return {i: {k: r[k] for k in keys if k in r} for i, r in records_by_iteration(path / "metrics.jsonl").items()}

    assert numbers(run) == numbers(straight)


def test_progress_gif_has_every_sheet_of_the_run_after_a_resume(straight, tiny_settings, tmp_path):
    sheets = sorted((straight / "samples").glob("fake_ema_*.png"))
    assert [sheet.name for sheet in sheets] == [f"fake_ema_{i:07d}.png" for i in (5, 10, 15, 20)]
    assert len(list((straight / "samples").glob("fake_0*.png"))) == 4  # G's own sheets too
    with Image.open(straight / "samples" / "progress.gif") as gif:
        assert gif.n_frames == 4 and gif.size == Image.open(sheets[0]).size


def test_ema_decay_0_turns_it_off(tiny_settings, tmp_path):
    run = tmp_path / "plain"
    assert task.train(tiny_settings(run, max_iters=4, eval_every=4, image_every=4, ema_decay=0)).exit_code == 0
    (record,) = [r for r in records_by_iteration(run / "metrics.jsonl").values() if "fid" in r]
    assert "fid_ema" not in record
    assert "generator_ema" not in load_checkpoint(run / "checkpoints" / "checkpoint_4.pt")
    assert not list((run / "samples").glob("fake_ema_*")) and (run / "samples" / "progress.gif").exists()


def generate_sheet(straight, tmp_path, **flags):
    from runner.settings import make_settings

    settings = make_settings(
        task.GenerateSettings, {"checkpoint": str(straight), "out": str(tmp_path / "s.png"), **flags}
    )
    return task.generate(settings).images


def test_generate_draws_from_the_average_by_default_and_from_g_on_request(straight, tmp_path, capsys):
    average = generate_sheet(straight, tmp_path, n=8)
    assert "wrote 8 frames of the moving average of G (checkpoint_20.pt)" in capsys.readouterr().err
    assert torch.equal(average, generate_sheet(straight, tmp_path, n=8, weights="ema"))
    raw = generate_sheet(straight, tmp_path, n=8, weights="raw", which="best")
    assert "of G (best_fid_" in capsys.readouterr().err
    assert raw.shape == average.shape == (8, 3, 16, 16) and not torch.equal(raw, average)
    assert Image.open(tmp_path / "s.png").size == (2 * 18 + 2, 4 * 18 + 2)  # 8 frames: 2 columns (its root), 4 rows


def test_interpolation_rows_walk_in_straight_lines_between_random_noises():
    from tasks.gan_generate import sheet_noise

    noise = sheet_noise(n=12, interpolate=4, latent_size=5, seed=3).view(3, 4, 5)
    steps = noise[:, 1:] - noise[:, :-1]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-6)  # equal steps: a straight line
    assert not torch.allclose(noise[0], noise[1])  # each row its own pair


def test_generate_refuses_what_it_cannot_draw_in_one_line(straight, tiny_settings, tmp_path):
    from runner.errors import UserError

    plain = tmp_path / "plain"
    assert task.train(tiny_settings(plain, max_iters=2, ema_decay=0)).exit_code == 0
    with pytest.raises(UserError, match=r"--weights ema: .*checkpoint_2.pt holds no moving average of G"):
        generate_sheet(plain, tmp_path, weights="ema")
    with pytest.raises(UserError, match=r"--which best: .* has no best_fid_\*.pt"):
        generate_sheet(plain, tmp_path, which="best")
    other = tmp_path / "other" / "checkpoints"
    other.mkdir(parents=True)
    state = load_checkpoint(straight / "checkpoints" / "checkpoint_20.pt")
    torch.save({**state, "settings": {**state["settings"], "data_dir": "faces"}}, other / "checkpoint_20.pt")
    with pytest.raises(UserError, match="made by another task or version"):
        generate_sheet(other.parent, tmp_path)
