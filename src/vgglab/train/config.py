"""The training config: YAML + ``--set key=value`` -> one validated :class:`Config`.

Each key is declared once, in its section (:mod:`.sections`, :mod:`vgglab.data.config`,
:mod:`.probe_config`): type, allowed values, limits, default and description, read by validation, the
generated reference, ``vgglab schema`` and resume alike. A misspelled key is an error naming it and the
nearest valid one, never a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from ..data.config import AugmentConfig, DataConfig
from ..declare import Section, json_schema, one_line, resumable
from ..dotted import differences, flatten
from ..files import named, write_text
from ..shipped import find_recipe, unknown_recipe
from ..speed import SpeedChoice
from ..strict import ConfigError, plain
from ..yamlio import apply_overrides, check_structure, read_yaml
from .probe_config import ProbeConfig
from .sections import LogConfig, ModelSection, OptimConfig, ScheduleConfig, TrainConfig

__all__ = ["Config", "ConfigError", "load_config", "save_config", "config_schema", "schema_text", "RESUME_KEYS", "SECTIONS"]


# Settings added after recipes were published, left out of a recipe's hash at their defaults so
# its identity (benchmarks/results, the README's tables) does not change as vgglab gains options.
LATER_KEYS = {
    "data": ("storage", "workers"),
    "augment": ("scale_min", "scale_max", "early_crop", "early_epochs", "stages", "brightness", "contrast"),
    "train": ("whiten_bias_epochs", "ema_start"),
    "optim": ("muon", "muon_lr", "muon_momentum", "muon_weight_decay", "muon_ns_coefficients", "muon_ns_steps"),
    "schedule": ("floor",),
    "log": ("mlflow", "progress_s"),
}
WHOLE = ("options", "spec")  # model.options and model.spec: one value each when configs are compared
# a section added later: left out of the hash whole while every setting in it is its default
LATER_SECTIONS = ("probe",)


class _Change(Section, section="changes"):
    """One resume's entry in ``changes``: the first epoch it trained and the settings it changed."""

    epoch: int = Field(ge=1)
    set: dict[str, Any]


_CHANGES = TypeAdapter(list[_Change] | None)


def _resolved(value):
    if value is not None:
        SpeedChoice.read(value, "resolved")  # one line for a hand-edited record, before it is reused
    return value


def _changes(value):
    try:
        _CHANGES.validate_python(value)
    except ValidationError:
        raise ConfigError(
            "changes is written by vgglab on resume (a list of {epoch: N, set: {key: value}}); "
            "it was edited: restore it, or delete it (the record of what resumes changed is then lost)"
        ) from None
    return value


class Config(BaseModel):
    """A whole training config: a name and one section each for data, augmentation, model, optimiser,
    schedule, training, logging and the linear probe."""

    model_config = ConfigDict(extra="forbid", title="vgglab recipe")
    name: Annotated[str, BeforeValidator(str)] = Field("run", description="the run's name (default: the recipe file's)")
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description=AugmentConfig.__doc__)
    model: ModelSection = Field(default_factory=ModelSection, description=ModelSection.__doc__)
    optim: OptimConfig = Field(default_factory=OptimConfig, description=OptimConfig.__doc__)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description=ScheduleConfig.__doc__)
    train: TrainConfig = Field(default_factory=TrainConfig, description=TrainConfig.__doc__)
    log: LogConfig = Field(default_factory=LogConfig, description=LogConfig.__doc__)
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="a linear probe instead of training")
    resolved: Annotated[dict | None, BeforeValidator(_resolved)] = Field(
        None,
        description="written by vgglab: what the auto speed settings resolved to on the machine that ran (resume, "
        "eval and the report reuse it); delete it to resolve again",
    )
    changes: Annotated[list | None, BeforeValidator(_changes)] = Field(
        None, description="written by vgglab: [{epoch, set: {key: value}}] for each resume that changed settings"
    )

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "config") -> Config:
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(d).__name__}")
        d = {k: ({} if v is None and k in SECTIONS else v) for k, v in d.items()}  # an empty `train:` is the defaults
        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise ConfigError(one_line(exc, cls, where)) from None

    def notes_across_sections(self) -> list[str]:
        """Settings that are each valid but together train something other than a reader may expect:
        printed in the run's header (not refused: a short trial run of a long recipe is legitimate)."""
        notes = []
        aug, epochs = self.augment, self.train.epochs
        if aug.early_crop is not None and aug.early_epochs >= epochs:
            notes.append(
                f"note: augment.early_epochs {aug.early_epochs} covers all {epochs} of train.epochs: every epoch trains on "
                f"{aug.early_crop}-pixel crops and none at the size the model is evaluated at; set early_epochs below "
                "train.epochs for a model that has seen full-size images"
            )
        staged = sum(n for n, _, _ in aug.resolution_stages())
        if aug.stages and staged >= epochs:
            notes.append(
                f"note: augment.stages cover {staged} epochs of train.epochs {epochs}: no epoch trains at the size the "
                "model is evaluated at; shorten the stages for a model that has seen full-size images"
            )
        return notes

    def to_dict(self) -> dict:
        return plain(self.model_dump())

    def flat(self) -> dict:
        """Dotted keys -> values (``model.options`` and ``model.spec`` as single values)."""
        return flatten(self.to_dict(), whole=WHOLE)

    def differences(self, other: Config) -> list[str]:
        """The dotted keys whose values differ (what ``auto`` resolved to and the resume record are not differences)."""
        return differences(self.to_dict(), other.to_dict(), whole=WHOLE, skip=("resolved", "changes"))

    def sha256(self) -> str:
        """The recipe's identity: every setting, not what auto resolved to on some machine."""
        d, default = self.to_dict(), Config.model_validate({}).to_dict()
        for section, keys in LATER_KEYS.items():
            d[section] = {k: v for k, v in d[section].items() if k not in keys or v != default[section][k]}
        d = {k: v for k, v in d.items() if k not in ("resolved", "changes") and (k not in LATER_SECTIONS or v != default[k])}
        return hashlib.sha256(yaml.safe_dump(d, sort_keys=True).encode()).hexdigest()


# the config's sections by name, in the order Config declares them
SECTIONS = {
    k: f.annotation
    for k, f in Config.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, Section)
}
# What `vgglab train --resume RUN --set key=value` may change (declared ``resume=True``): settings that
# do not alter what the checkpointed weights, optimiser, schedule and data order mean. Anything else would
# be recorded in config.yaml while the resumed state kept the old meaning, so it is refused in one line.
RESUME_KEYS = resumable(Config)


def config_schema() -> dict:
    """The JSON Schema of a recipe, for editors (``vgglab schema``; shipped beside the recipes)."""
    return json_schema(Config) | {"$schema": "https://json-schema.org/draft/2020-12/schema"}


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2) + "\n"


def load_config(source: str | Path | dict | Config | None = None, overrides=None) -> Config:
    """A Config from a YAML path, a dict or a Config, with dotted overrides applied."""
    if isinstance(source, Config):
        source = source.to_dict()
    where = "config"
    if isinstance(source, (str, Path)):
        if not named(source):  # a path wins, a link too (broken or not); else a shipped recipe by name
            shipped = find_recipe(str(source))
            if shipped is None and Path(source).parent == Path("."):
                raise ConfigError(unknown_recipe(str(source)))
            source = shipped or source
        where = str(source)
        data = read_yaml(source)
        data.setdefault("name", Path(source).stem)
    else:
        data = source or {}
        check_structure(data, where)
    try:
        return Config.from_dict(apply_overrides(data, overrides), where)
    except ConfigError as exc:
        if not overrides or where == "config" or where not in str(exc):
            raise
        try:  # the recipe alone is fine: the override is at fault, so name it, not the file
            Config.from_dict(data, where)
        except ConfigError:
            raise exc from None
        raise ConfigError(str(exc).replace(f"{where}: ", "--set ", 1)) from None


def save_config(config: Config, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
