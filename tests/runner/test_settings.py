"""Typed settings: flags generated from a dataclass, checked values, and the rules of a resumed run."""

import json
from dataclasses import FrozenInstanceError, dataclass
from typing import ClassVar

import pytest

from runner.errors import UserError
from runner.settings import (
    Schedule,
    Settings,
    flag_name,
    from_saved,
    make_settings,
    parse_flags,
    positive,
    setting,
    settings_dict,
)
from tasks.atari_gan import AtariGanSettings


def one_or_two_words(value: str) -> None:
    if not 1 <= len(value.split()) <= 2:
        raise ValueError("must be one or two words")


@dataclass(frozen=True)
class ToySettings(Settings):
    max_iters: int = setting(10, "how many iterations", check=positive, resume="free")
    lr: float = setting(0.1, "learning rate", check=positive)
    name: str = setting("toy", "what to call it", check=one_or_two_words)
    verbose: bool = setting(False, "say more", resume="free")
    games: tuple[str, ...] = setting(("Pong",), "games to play")


@dataclass(frozen=True)
class ValidatedSettings(Settings):
    low: int = setting(1, "lower bound")
    high: int = setting(2, "upper bound")

    def validate(self) -> None:
        if self.low >= self.high:
            raise ValueError(f"--low {self.low} must be below --high {self.high}")


# --- flags ----------------------------------------------------------------------------------------------------------


def test_parse_flags_returns_only_the_flags_given():
    assert parse_flags(ToySettings, [], prog="toy") == {}
    assert parse_flags(ToySettings, ["--lr", "0.5"], prog="toy") == {"lr": 0.5}


def test_flag_names_use_dashes_for_underscores():
    assert flag_name("max_iters") == "--max-iters"
    assert parse_flags(ToySettings, ["--max-iters", "7"], prog="toy") == {"max_iters": 7}


def test_parse_flags_converts_every_field_type():
    explicit = parse_flags(
        ToySettings,
        ["--max-iters", "3", "--lr", "1e-4", "--name", "my run", "--verbose", "--games", "Pong", "Breakout"],
        prog="toy",
    )

    assert explicit == {"max_iters": 3, "lr": 1e-4, "name": "my run", "verbose": True, "games": ("Pong", "Breakout")}
    assert type(explicit["max_iters"]) is int
    assert type(explicit["lr"]) is float
    assert type(explicit["games"]) is tuple


def test_a_bool_flag_can_be_turned_off_explicitly():
    assert parse_flags(ToySettings, ["--no-verbose"], prog="toy") == {"verbose": False}


@pytest.mark.parametrize(
    "argv",
    [["--max-iters", "ten"], ["--lr", "fast"], ["--no-such-flag", "1"], ["--max-iters"]],
)
def test_a_bad_flag_exits_with_code_2_and_one_line_on_stderr(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(ToySettings, argv, prog="toy")

    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("toy: error:")


def test_a_bad_int_value_names_the_flag_and_the_value(capsys):
    with pytest.raises(SystemExit):
        parse_flags(ToySettings, ["--max-iters", "ten"], prog="toy")

    err = capsys.readouterr().err
    assert "--max-iters" in err
    assert "ten" in err


def test_help_shows_each_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_flags(ToySettings, ["--help"], prog="toy")

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--max-iters" in out
    assert "learning rate (default: 0.1)" in out
    assert "(default: Pong)" in out


# --- building settings ----------------------------------------------------------------------------------------------


def test_make_settings_fills_in_defaults_and_is_frozen():
    settings = make_settings(ToySettings, {"lr": 0.5})

    assert settings == ToySettings(max_iters=10, lr=0.5, name="toy", verbose=False, games=("Pong",))
    with pytest.raises(FrozenInstanceError):
        settings.lr = 1.0


def test_make_settings_accepts_an_int_for_a_float():
    assert make_settings(ToySettings, {"lr": 1}).lr == 1


def test_make_settings_rejects_unknown_keys():
    with pytest.raises(UserError, match="unknown setting.*learning_rate"):
        make_settings(ToySettings, {"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"max_iters": True}, "--max-iters"),
        ({"max_iters": 2.0}, "--max-iters"),
        ({"lr": "0.1"}, "--lr"),
        ({"lr": False}, "--lr"),
        ({"name": 3}, "--name"),
        ({"verbose": 1}, "--verbose"),
        ({"games": "Pong"}, "--games"),
        ({"games": ("Pong", 3)}, "--games"),
    ],
)
def test_make_settings_rejects_wrong_types_naming_the_flag(values, name):
    with pytest.raises(UserError) as error:
        make_settings(ToySettings, values)

    assert name in str(error.value)
    assert repr(next(iter(values.values()))) in str(error.value)


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"lr": -0.1}, "--lr"),
        ({"lr": 0}, "--lr"),
        ({"max_iters": 0}, "--max-iters"),
        ({"name": "far too many words"}, "--name"),
    ],
)
def test_make_settings_rejects_failing_checks_naming_the_flag_and_the_reason(values, flag):
    with pytest.raises(UserError) as error:
        make_settings(ToySettings, values)

    message = str(error.value)
    assert message.startswith(flag)
    assert str(next(iter(values.values()))) in message
    assert "must" in message


def test_make_settings_runs_the_cross_field_validation():
    assert make_settings(ValidatedSettings, {"low": 1, "high": 5}).high == 5
    with pytest.raises(UserError, match="--low 3 must be below --high 2"):
        make_settings(ValidatedSettings, {"low": 3})


def test_setting_refuses_an_unknown_resume_mode():
    with pytest.raises(ValueError, match="resume"):
        setting(1, "x", resume="sometimes")


def test_settings_dict_turns_tuples_into_lists_and_is_json_ready():
    settings = make_settings(ToySettings, {"games": ("Pong", "Breakout")})

    plain = settings_dict(settings)

    assert plain == {"max_iters": 10, "lr": 0.1, "name": "toy", "verbose": False, "games": ["Pong", "Breakout"]}
    assert json.loads(json.dumps(plain)) == plain


# --- resuming -------------------------------------------------------------------------------------------------------


def saved_toy(**values) -> dict:
    """Settings as a checkpoint or config.json holds them (tuples are lists there)."""
    return settings_dict(make_settings(ToySettings, values))


def test_from_saved_merges_the_saved_settings_with_the_explicit_flags():
    saved = saved_toy(lr=0.2, games=("Pong", "Breakout"), max_iters=10)

    settings = from_saved(ToySettings, saved, {"max_iters": 50, "verbose": True}, source="run/checkpoint_10.pt")

    assert settings == ToySettings(max_iters=50, lr=0.2, name="toy", verbose=True, games=("Pong", "Breakout"))


def test_from_saved_refuses_a_change_to_a_fixed_setting_naming_both_values():
    saved = saved_toy(lr=0.2)

    with pytest.raises(UserError) as error:
        from_saved(ToySettings, saved, {"lr": 0.3}, source="run/checkpoint_10.pt")

    message = str(error.value)
    assert "--lr 0.3" in message
    assert "--lr 0.2" in message
    assert "run/checkpoint_10.pt" in message


def test_from_saved_refuses_a_change_to_a_fixed_tuple_setting():
    saved = saved_toy(games=("Pong",))

    with pytest.raises(UserError, match="--games Pong Breakout conflicts .* --games Pong;"):
        from_saved(ToySettings, saved, {"games": ("Pong", "Breakout")}, source="the checkpoint")


def test_from_saved_allows_repeating_a_fixed_setting_with_its_saved_value():
    saved = saved_toy(lr=0.2, games=("Pong", "Breakout"))

    settings = from_saved(ToySettings, saved, {"lr": 0.2, "games": ("Pong", "Breakout")}, source="the checkpoint")

    assert settings.lr == 0.2
    assert settings.games == ("Pong", "Breakout")


def test_from_saved_compares_a_setting_missing_from_old_saves_with_its_default():
    saved = saved_toy(lr=0.2)
    del saved["name"]

    assert from_saved(ToySettings, saved, {"name": "toy"}, source="old").name == "toy"
    with pytest.raises(UserError, match="--name"):
        from_saved(ToySettings, saved, {"name": "other"}, source="old")


def test_from_saved_refuses_saved_settings_with_unknown_keys():
    saved = {**saved_toy(), "momentum": 0.9}

    with pytest.raises(UserError) as error:
        from_saved(ToySettings, saved, {}, source="other/checkpoint_5.pt")

    assert "momentum" in str(error.value)
    assert "other/checkpoint_5.pt" in str(error.value)


def test_from_saved_still_checks_the_merged_values():
    with pytest.raises(UserError, match="--max-iters"):
        from_saved(ToySettings, saved_toy(), {"max_iters": -1}, source="the checkpoint")


# --- the Atari GAN task's settings ----------------------------------------------------------------------------------


def test_atari_gan_defaults_are_the_chapters():
    settings = make_settings(AtariGanSettings, {})

    assert settings.batch_size == 16
    assert settings.image_size == 64
    assert settings.latent_size == 100
    assert settings.filters == 64
    assert settings.lr == 1e-4
    assert settings.beta1 == 0.5
    assert settings.games == ("Breakout", "AirRaid", "Pong")
    assert settings.keep_checkpoints >= 2


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": -16}, "--batch-size"),
        ({"image_size": 0}, "--image-size"),
        ({"image_size": 48}, "--image-size"),
        ({"latent_size": 0}, "--latent-size"),
        ({"filters": -1}, "--filters"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -1e-4}, "--lr"),
        ({"beta1": 1.0}, "--beta1"),
        ({"max_iters": 0}, "--max-iters"),
        ({"keep_checkpoints": 1}, "--keep-checkpoints"),
    ],
)
def test_atari_gan_refuses_unusable_values(values, flag):
    with pytest.raises(UserError) as error:
        make_settings(AtariGanSettings, values)

    assert str(error.value).startswith(flag)


def test_atari_gan_unknown_game_suggests_the_close_one():
    with pytest.raises(UserError) as error:
        make_settings(AtariGanSettings, {"games": ("Brekout",)})

    message = str(error.value)
    assert message.startswith("--games")
    assert "Brekout" in message
    assert "Breakout" in message.replace("Brekout", "")


def test_atari_gan_resume_may_change_where_and_how_long_but_not_the_model():
    saved = settings_dict(make_settings(AtariGanSettings, {"max_iters": 100, "output_dir": "runs/a"}))

    resumed = from_saved(AtariGanSettings, saved, {"max_iters": 200, "dev": "cpu"}, source="runs/a")
    assert resumed.max_iters == 200
    assert resumed.output_dir == "runs/a"
    for fixed in ({"lr": 1e-3}, {"batch_size": 8}, {"image_size": 32}, {"seed": 1}):
        with pytest.raises(UserError, match="conflicts"):
            from_saved(AtariGanSettings, saved, fixed, source="runs/a")


def test_a_schedule_says_how_long_a_run_is_and_what_trainer_run_takes():
    iterations, epochs = Schedule("iterations", 500), Schedule("epochs", 3)
    assert (iterations.flag, epochs.flag) == ("--max-iters", "--max-epochs")
    assert (iterations.total_iterations(40), epochs.total_iterations(40)) == (500, 120)
    assert iterations.run_arguments(resumed=False) == {"max_iters": 500, "epoch_length": 500}
    assert iterations.run_arguments(resumed=True) == {"max_iters": 500, "epoch_length": None}
    assert epochs.run_arguments(resumed=True) == {"max_epochs": 3}
    assert Schedule.of_config({"max_iters": 7, "lr": 0.1}) == Schedule("iterations", 7)
    assert Schedule.of_config({"max_epochs": 2}) == Schedule("epochs", 2) and Schedule.of_config({}) is None


def test_every_training_settings_class_declares_its_schedule():
    from tasks.autoencode import AutoencodeSettings
    from tasks.char_rnn import CharRnnSettings
    from tasks.image_gan import ImageGanSettings
    from tasks.supervised import ClassifySettings

    assert AtariGanSettings().schedule == Schedule("iterations", AtariGanSettings().max_iters)
    assert ImageGanSettings().schedule.per_iteration
    for settings_cls in (AutoencodeSettings, CharRnnSettings, ClassifySettings):
        assert settings_cls().schedule == Schedule("epochs", settings_cls().max_epochs)
    assert AtariGanSettings.distributed and ClassifySettings.distributed and not CharRnnSettings.distributed


def test_from_saved_drops_a_setting_the_class_retired_and_still_refuses_unknown_ones():
    @dataclass(frozen=True)
    class Retiring(ToySettings):
        retired: ClassVar[frozenset[str]] = frozenset({"old_switch"})

    saved = {**saved_toy(lr=0.2), "old_switch": False}
    assert from_saved(Retiring, saved, {}, source="old").lr == 0.2
    with pytest.raises(UserError, match="unknown settings: momentum"):
        from_saved(Retiring, {**saved, "momentum": 0.9}, {}, source="old")
