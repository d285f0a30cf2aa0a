"""Declared settings: each config key is one typed field (its allowed values as its type, its limits
as constraints, its default and a one-line description) of a pydantic model, and everything else reads
that declaration: validation of recipes and ``--set``, the generated config reference, the JSON Schema
that editors complete recipes from, and the keys a resume may change.

pydantic's errors are rewritten here into vgglab's one line: the key with its section, what it
allows and, for a misspelling, the nearest valid spelling."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from pathlib import PurePath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from .strict import ConfigError, _suggest

__all__ = ["Section", "Number", "Text", "Values", "setting", "checked", "choices", "resumable", "json_schema", "one_line"]


def _yaml_number(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as text: take a string that spells a finite number as that number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


# a number that keeps the type it was written with (an int stays an int: a recipe's identity hashes its text)
Number = Annotated[float | int, BeforeValidator(_yaml_number)]
# a string that may be given as a path (the Python API)
Text = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, PurePath) else v)]
# a fixed-length sequence that a recipe writes as a YAML list
Values = BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)


def setting(default: Any, description: str, *, resume: bool = False, **limits: Any) -> Any:
    """One key's declaration: its default, what it does (one line, shown in the reference and by editors),
    its limits (``ge``, ``gt``, ``le``, ``lt``, ...) and whether a resume may change it."""
    return Field(default, description=description, json_schema_extra={"resume": True} if resume else None, **limits)


class Section(BaseModel):
    """A config section: unknown keys refused, values taken only in their own type (``1`` is not ``true``),
    non-finite numbers refused. A direct construction raises :class:`ConfigError` in one line too."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    section: ClassVar[str] = ""  # its key in a recipe, given where it is declared: class DataConfig(Section, section="data")

    def __init_subclass__(cls, section: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.section = section

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(one_line(exc, type(self), section=self.section)) from None

    @classmethod
    def read(cls, data: Any, where: str):
        """The section from a mapping (a recorded config's), a problem one line that names ``where``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(one_line(exc, cls, where, cls.section)) from None


def checked(cls, data: Any, error=ConfigError, section: str = "", skip: tuple[str, ...] = (), partial: bool = False) -> dict:
    """``data``'s values for the fields of dataclass ``cls`` (a model spec, a recorded speed choice)
    checked as a :class:`Section` checks a recipe's, a ``float`` field taking a :data:`Number`: other keys
    refused, a field without a default required; ``skip`` unchecked. ``partial``: only the keys given that
    are fields are checked. A problem is ``error`` with :func:`one_line`'s message."""
    model = _mirror(cls, skip, partial)
    try:
        valid = model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(exc, model, section=section)) from None
    return {k: getattr(valid, k) if k in model.model_fields else v for k, v in data.items()}


@functools.cache
def _mirror(cls: type, skip: tuple[str, ...], partial: bool) -> type[BaseModel]:
    hints = {k: Any if k in skip else Number if v is float else v for k, v in typing.get_type_hints(cls).items()}
    required = {f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING}
    fields: dict[str, Any] = {
        f.name: (hints[f.name], ... if f.name in required - {*skip} and not partial else None) for f in dataclasses.fields(cls)
    }
    config = ConfigDict(extra="ignore" if partial else "forbid", strict=True, allow_inf_nan=False)
    return create_model(cls.__name__, __config__=config, **fields)


def choices(annotation) -> tuple:
    """The values a ``Literal`` annotation (possibly inside a union or ``Annotated``) allows."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin is Annotated:
        return choices(typing.get_args(annotation)[0])
    return tuple(v for arg in typing.get_args(annotation) for v in choices(arg))


def resumable(model: type[BaseModel], prefix: str = "") -> tuple[str, ...]:
    """The dotted keys declared ``resume=True`` in ``model`` and the sections it holds."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys.extend(resumable(info.annotation, f"{prefix}{name}."))
        elif isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("resume"):
            keys.append(prefix + name)
    return tuple(keys)


_LIMITS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def json_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON Schema as editors read it: a :data:`Number` is ``number``, and limits that
    pydantic leaves in its own words on a union are written as JSON Schema's."""

    def clean(node):
        if isinstance(node, list):
            return [clean(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: clean(v) for k, v in node.items() if k != "resume"}
        if out.get("anyOf") == [{"type": "number"}, {"type": "integer"}]:
            del out["anyOf"]
            out["type"] = "number"
        for short, long in _LIMITS.items():
            if short in out and not isinstance(out[short], dict):
                out[long] = out.pop(short)
        if node.get("resume") is True:
            out["description"] = out.get("description", "") + " (a resume may change it)"
        return out

    return clean(model.model_json_schema())


# --- pydantic's errors as one line ---------------------------------------------------------------

_KINDS = {  # the error types of strict validation
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "none_required": "null",
    "model_type": "a mapping",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _walk(loc: tuple, model: type[BaseModel] | None) -> tuple[str, Any]:
    """The dotted key a pydantic location names (union members' tags left out) and the annotation of
    the field it ends in (the model itself for an empty location)."""
    key, annotation = "", typing.cast(Any, model)
    for part in loc:
        fields = model.model_fields if model is not None else {}
        if isinstance(part, int):
            key += f"[{part}]"
            inner = _unwrap(_present(annotation))
            items = typing.get_args(inner)
            annotation = items[0] if typing.get_origin(inner) is list else items[part % max(len(items), 1)]
        elif part in fields:
            key += ("." if key else "") + part
            annotation = fields[part].annotation
            model = typing.cast(type[BaseModel], annotation) if _is_model(annotation) else None
    return key, annotation


def one_line(exc: ValidationError, model: type[BaseModel], where: str = "", section: str = "") -> str:
    """The first problem of ``exc`` (raised validating ``model``, the config or its ``section``) as vgglab's
    one line, ``where`` (the file, or ``--set``) first."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    raised = (first.get("ctx") or {}).get("error")
    prefix = f"{where}: " if where else ""
    if isinstance(raised, ConfigError):  # a check across keys, written as code, said it already
        return f"{prefix}{raised}"

    def dotted(loc: tuple) -> tuple[str, Any]:
        key, annotation = _walk(loc, model)
        return (f"{section}.{key}" if section and key else key or section), annotation

    if first["type"] == "extra_forbidden":
        key, owner = dotted(first["loc"][:-1])
        owner = owner if _is_model(owner) else model
        unknown, valid = str(first["loc"][-1]), list(owner.model_fields)
        if key:
            return f"{prefix}{key}: unknown key {unknown!r}{_suggest(unknown, valid)}; valid keys: {', '.join(valid)}"
        return f"{prefix}unknown section {unknown!r}{_suggest(unknown, valid)}; valid: {', '.join(valid)}"
    key, annotation = dotted(first["loc"])
    value = first.get("input")
    if first["type"] == "missing" and isinstance(value, dict):
        return f"{prefix}{key}: required, but not given"
    if first["type"] in ("missing", "too_short", "too_long") and isinstance(value, (list, tuple)):
        whole = key.rsplit("[", 1)[0] if first["type"] == "missing" else key
        count = len(typing.get_args(_unwrap(dotted(first["loc"][:-1])[1] if first["type"] == "missing" else annotation)))
        return f"{prefix}{whole}: expected {count} values, got {list(value)!r}"
    path = [e for e in errors if dotted(e["loc"])[0] == key]
    shown = f"{value!r}" + ("" if value is None else f" ({type(value).__name__})")
    if len(path) == 1 and first["type"] in _BOUNDS:
        limit = next(iter(first["ctx"].values()))
        return f"{prefix}{key} must be {_BOUNDS[first['type']]} {limit}, got {value!r}"
    if any(e["type"] == "finite_number" for e in path):
        return f"{prefix}{key}: expected a finite number, got {value!r}"
    allowed = choices(annotation)
    kinds = list(dict.fromkeys(_KINDS[e["type"]] for e in path if e["type"] in _KINDS))
    if "a number" in kinds and "an integer" in kinds:
        kinds.remove("an integer")
    if allowed and isinstance(value, str) and set(kinds) <= {"a string", "true or false", "null"}:
        words = [*map(str, allowed), *(("true", "false") if "true or false" in kinds else ())]
        return f"{prefix}{key}: {value!r} is not one of {', '.join(words)}{_suggest(value, words)}"
    if allowed:
        kinds.append("one of " + ", ".join(map(str, allowed)))
    if type(None) in typing.get_args(annotation):
        kinds.append("null")
    if kinds:
        return f"{prefix}{key}: expected {' or '.join(kinds)}, got {shown}"
    message = first["msg"][0].lower() + first["msg"][1:]
    return f"{prefix}{key}: {message}, got {shown}"


def _present(annotation):
    """``X`` of ``X | None``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) in (types.UnionType, typing.Union) and len(args) == 1 else annotation


def _unwrap(annotation):
    return _unwrap(typing.get_args(annotation)[0]) if typing.get_origin(annotation) is Annotated else annotation


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
