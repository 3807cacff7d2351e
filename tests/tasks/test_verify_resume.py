"""verify_resume.py: exact on the tasks as they are, "differs" on a planted fault, one line on a mistake."""

import pytest

from conftest import LAUNCHER, REPO
from tasks.verify_resume import main, verify

TINY_GAN = ["--dev", "cpu", "--image-size", "16", "--filters", "4", "--batch-size", "4", "--latent-size", "8"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv), description="")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# The stable recipe with every other technique on too: lazy R1, ADA's strength, the EMA warm-up and the learning
# rates' decay span the kills.
EVERY_TECHNIQUE = ["--recipe", "stable", "--d-norm", "spectral+batchnorm", "--r1-every", "3", "--ema-warmup", "20"]
EVERY_TECHNIQUE += ["--lr-decay-from", "4"]
EVERY_TECHNIQUE += ["--augment", "translation,color,cutout", "--augment-p", "0", "--ada-target", "0.3"]
EVERY_TECHNIQUE += ["--ada-speed", "100", "--eval-every", "8", "--collapse-factor", "1.05"]


def test_the_atari_gan_with_every_technique_killed_and_resumed_is_exact(capsys, tmp_path):
    flags = [*TINY_GAN, *EVERY_TECHNIQUE, "--max-iters", "24", "--checkpoint-every", "5"]
    code, out, err = run(capsys, "atari_gan", *flags, "--kills", "2", "--work-dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith("exact: ") and "after 2 kills" in out
    killed_after = [int(line.split()[3].rstrip(";")) for line in err.splitlines() if "  killed after" in line]
    assert len(killed_after) == 2 and all(5 < iteration < 24 for iteration in killed_after)
    assert (tmp_path / "killed" / "checkpoints").is_dir() and (tmp_path / "uninterrupted" / "config.json").exists()


def test_a_kill_lands_within_a_typical_iteration_not_within_an_evaluation():
    """An evaluation between two logged iterations (seconds, against milliseconds per step) must not stretch the
    random delay of a kill past the run's end: the delay is drawn from the median step."""
    from tasks.verify_resume import typical_iteration

    seen = [(15, 0.0), (16, 0.1), (17, 8.1), (18, 8.2), (19, 8.3)]  # an evaluation at 16
    assert typical_iteration(seen) == pytest.approx(0.1)
    assert typical_iteration([(3, 0.0), (7, 2.0)]) == pytest.approx(0.5)  # several iterations in one poll
    assert typical_iteration([(3, 0.0)]) == 0.01


def test_kills_start_after_the_first_checkpoint_the_flags_ask_for_not_the_first_one_kept():
    from tasks.atari_gan import AtariGan
    from tasks.verify_resume import checkpoint_schedule

    flags = ["--checkpoint-every", "7"]
    assert checkpoint_schedule(flags, AtariGan, REPO / "no" / "run", 60, kills=3) == (flags, 7)


def test_an_epoch_task_killed_inside_epochs_resumes_from_their_ends_exactly(capsys, tmp_path):
    flags = ["--dataset", "linear", "--batch-size", "16", "--lr", "0.001", "--max-epochs", "2"]
    code, out, err = run(capsys, "regress", *flags, "--kills", "1", "--kill-seed", "3", "--work-dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith("exact: ") and "after 1 kill " in out
    assert err.count("resuming from checkpoint_50.pt") == 1  # the end of epoch 1, the kill inside epoch 2


def test_a_planted_fault_is_found_and_named(tmp_path, capsys):
    """The RNGs not restored at a resume: the resumed run draws other noise, and the check must say so."""
    planted = tmp_path / "planted_atari_gan.py"
    planted.write_text(
        "import runpy, sys\n"
        "import runner.rng\n"
        "runner.rng.GlobalRNG.load_state_dict = lambda self, state: None  # the fault\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        f"runpy.run_path({str(LAUNCHER)!r}, run_name='__main__')\n"
    )
    flags = [*TINY_GAN, "--max-iters", "16", "--log-every", "1"]
    outcome = verify("atari_gan", flags, kills=1, kill_seed=0, work_dir=tmp_path / "work", script=planted)
    assert outcome.exit_code == 1 and outcome.kills
    iteration, key, straight, resumed = outcome.difference
    assert iteration > outcome.kills[0] - 4 and straight != resumed  # after the resumed checkpoint, not before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "argument task: invalid choice: 'nosuch'"),
        (["atari_gan", "--kills", "0"], "--kills 0: must be positive"),
        (["atari_gan", "--output-dir", "x"], "--output-dir is set by verify_resume itself (see --work-dir)"),
        (["atari_gan", "--max-iters", "0"], "exit code 2: ignite-book atari_gan: error: --max-iters 0"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    code, out, err = run(capsys, *argv, "--work-dir", str(tmp_path / "w"))
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_a_run_that_ends_before_a_kill_tested_nothing_and_says_so(capsys, tmp_path):
    code, out, err = run(capsys, "atari_gan", *TINY_GAN, "--max-iters", "2", "--work-dir", str(tmp_path))
    assert code == 2 and not out.startswith("exact")
    assert "the run ended before a kill, so no resume was tested: use a larger --max-iters" in err


def test_every_difference_fails_on_every_device_a_missing_record_too(capsys):
    from tasks.verify_resume import Outcome, report

    missing = Outcome(1, [5], (7, "fid", 12.5, "(missing)"), 40)
    assert report(missing) == 1
    assert "differs: iteration 7, fid: uninterrupted 12.5, resumed (missing)" in capsys.readouterr().out
    assert report(Outcome(1, [5], (7, "loss_dis", 0.25, 0.2500001), 40)) == 1


def test_on_cuda_both_runs_use_deterministic_kernels_however_dev_is_spelt():
    from runner.errors import UserError
    from tasks.verify_resume import deterministic_flags, run_device

    assert [run_device(f) for f in (["--dev", "cuda:1"], ["--dev=cuda"], ["--seed", "1"])] == ["cuda:1", "cuda", "cpu"]
    assert deterministic_flags(["--dev=cuda", "--seed", "1"]) == ["--dev=cuda", "--seed", "1", "--deterministic"]
    assert deterministic_flags(["--dev", "cuda", "--deterministic"]) == ["--dev", "cuda", "--deterministic"]
    assert deterministic_flags(["--dev", "cpu"]) == ["--dev", "cpu"]  # CPU kernels repeat without it
    with pytest.raises(UserError, match="--no-deterministic: on CUDA only deterministic kernels"):
        deterministic_flags(["--dev", "cuda", "--no-deterministic"])
