"""A sweep's search space as a file the user writes (YAML or JSON), keyed by the task's setting names:

    r1_weight: {low: 0.01, high: 10, log: true}   # a range: float for a float setting, int for an int one
    dis_lr: {low: 1.0e-4, high: 1.0e-3, log: true}
    loss: [hinge, relativistic]                   # a list of choices
    filters: 32                                   # a fixed value: not searched, given to every trial

``sweep.py TASK --print-space`` prints the task's default space in this form, a valid ``--space``. A setting the
file leaves out is not searched and may be given as a normal flag. Every bound, choice and fixed value is checked
as its flag would be; a mistake is one line naming the file and the key.
"""

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from runner.errors import UserError
from runner.settings import check_setting, flag_name, read_mapping

NOT_SEARCHABLE = ("dev", "seed", "output_dir", "resume", "nproc_per_node")  # the sweep's own, or one process a trial


@dataclass(frozen=True)
class SearchSpace:
    searched: dict[str, BaseDistribution]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self) -> str:
        """What a study keeps of its space (a continued study must search the same one)."""
        searched = {name: optuna.distributions.distribution_to_json(d) for name, d in self.searched.items()}
        return json.dumps({"searched": searched, "fixed": self.fixed}, sort_keys=True)

    def describe(self) -> str:
        """One line: ``lr 1e-05..0.001 (log); batch_size in [16, 32, 64]``."""
        parts = []
        for name, distribution in self.searched.items():
            if isinstance(distribution, CategoricalDistribution):
                parts.append(f"{name} in {list(distribution.choices)}")
            else:
                parts.append(
                    f"{name} {distribution.low:g}..{distribution.high:g}{' (log)' if distribution.log else ''}"
                )
        return "; ".join(parts)

    def text(self) -> str:
        """The space as YAML, a valid ``--space`` file."""
        entries: dict[str, Any] = {}
        for name, distribution in self.searched.items():
            if isinstance(distribution, CategoricalDistribution):
                entries[name] = list(distribution.choices)
            else:
                entries[name] = {"low": distribution.low, "high": distribution.high, "log": distribution.log}
        return yaml.safe_dump({**entries, **self.fixed}, sort_keys=False, default_flow_style=None)


def read_space(path: str, settings_cls: type) -> SearchSpace:
    """The space in the file at ``path``, each entry checked against ``settings_cls``."""
    data = read_mapping(path, flag="--space", what="map setting names to a range, a list of choices or a value")
    if not data:
        raise UserError(f"--space {path}: names no setting to search")
    types = typing.get_type_hints(settings_cls)
    searched, fixed = {}, {}
    for name, entry in data.items():
        if name not in types or name in NOT_SEARCHABLE:
            raise UserError(f"{path}: {name}: not a setting a sweep can search")
        try:
            if isinstance(entry, dict):
                searched[name] = value_range(settings_cls, name, types[name], entry)
            elif isinstance(entry, list):
                searched[name] = choices(settings_cls, name, entry)
            else:
                check_setting(settings_cls, name, entry)
                fixed[name] = entry
        except UserError as error:
            raise UserError(f"{path}: {name}: {error}") from None
    return SearchSpace(searched, fixed)


def value_range(settings_cls: type, name: str, kind: Any, entry: dict[str, Any]) -> BaseDistribution:
    unknown = sorted(set(entry) - {"low", "high", "log"})
    if unknown or not {"low", "high"} <= set(entry):
        raise UserError("a range is {low: L, high: H} with an optional log: true")
    if kind not in (int, float):
        raise UserError(f"{flag_name(name)} is no number: give a list of choices")
    low, high, log = entry["low"], entry["high"], entry.get("log", False)
    for bound in (low, high):
        check_setting(settings_cls, name, float(bound) if kind is float and isinstance(bound, int) else bound)
    if not low < high:
        raise UserError(f"an empty range ({low} to {high}): low must be below high")
    if log is not True and log is not False:
        raise UserError("log must be true or false")
    if log and low <= 0:
        raise UserError("a log range needs low > 0")
    return FloatDistribution(float(low), float(high), log=log) if kind is float else IntDistribution(low, high, log=log)


def choices(settings_cls: type, name: str, entry: list[Any]) -> CategoricalDistribution:
    if not entry:
        raise UserError("an empty list of choices")
    for choice in entry:
        check_setting(settings_cls, name, choice)
    return CategoricalDistribution(entry)


def check_same_space(study: optuna.Study, space: SearchSpace) -> None:
    """A study keeps its space: continuing it with another would mix trials of two searches; refused."""
    recorded, now = study.user_attrs.get("search_space"), space.record()
    if recorded is not None and recorded != now:
        raise UserError(
            f"study '{study.study_name}' searches another space: continue it with the same --space, or give a new "
            "--study-name"
        )
    study.set_user_attr("search_space", now)
