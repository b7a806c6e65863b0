"""Declarative, validated option fields shared by the run config and algorithm params.

Each field of a config dataclass is declared with :func:`option`, which records its help
text and accepted range. The same metadata builds the CLI options (``lambda1`` becomes
``--lambda1``), reads TOML files and validates values, so a number is defined once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field
from typing import Any

from genefl.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """Accepted values of one option."""

    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    choices: tuple[str, ...] | None = None
    #: whether +-inf is an accepted value (otherwise every float must be finite)
    allow_inf: bool = False
    #: whether ``auto`` is accepted as a spelling of 0 (an integer option's automatic value)
    auto: bool = False

    def describe(self) -> str:
        """Human-readable accepted range, e.g. ``in (0, 1]`` or ``one of a, b``."""
        if self.auto:
            return "auto (or 0) or an integer >= 1"
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.minimum is None and self.maximum is None:
            return "any value"
        lo = "-inf" if self.minimum is None else _fmt(self.minimum)
        hi = "inf" if self.maximum is None else _fmt(self.maximum)
        if self.maximum is None:
            return f"{'>' if self.exclusive_min else '>='} {lo}"
        if self.minimum is None:
            return f"{'<' if self.exclusive_max else '<='} {hi}"
        left = "(" if self.exclusive_min else "["
        right = ")" if self.exclusive_max else "]"
        return f"in {left}{lo}, {hi}{right}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
    choices: Sequence[str] | None = None,
    allow_inf: bool = False,
    auto: bool = False,
) -> Any:
    """A dataclass field carrying its help text and accepted range (``auto``: an integer
    option that also takes the word ``auto``, stored as 0).
    """
    rule = Rule(
        help, minimum, maximum, exclusive_min, exclusive_max,
        tuple(choices) if choices is not None else None, allow_inf, auto,
    )
    return field(default=default, metadata={"rule": rule})


def flag(name: str) -> str:
    """CLI spelling of a field name: ``known_rounds`` -> ``--known-rounds``."""
    return "--" + name.replace("_", "-")


def option_fields(cls: type) -> list[Field[Any]]:
    """The fields of ``cls`` declared with :func:`option`."""
    return [f for f in dataclasses.fields(cls) if "rule" in f.metadata]


def base_type(cls: type, f: Field[Any]) -> tuple[type, bool]:
    """``(scalar type, optional)`` of a field, resolving string annotations."""
    hints = typing.get_type_hints(cls)
    tp = hints[f.name]
    optional = False
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        tp = next(a for a in args if a is not type(None))
    return tp, optional


def coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """Convert ``value`` (from TOML or the CLI) to the field's type or raise ConfigError."""
    f = next((f for f in option_fields(cls) if f.name == name), None)
    if f is None:
        raise ConfigError(f"unknown option {name!r} in {source}")
    tp, optional = base_type(cls, f)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise ConfigError(f"{flag(name)} needs a value ({f.metadata['rule'].describe()})")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if tp is int:
            if f.metadata["rule"].auto and isinstance(value, str) and (
                value.strip().lower() == "auto"
            ):
                return 0
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ConfigError(
        f"{flag(name)} must be {tp.__name__} ({f.metadata['rule'].describe()}); got {value!r} "
        f"in {source}"
    )


def check_rules(obj: Any) -> None:
    """Validate every option field of a dataclass instance against its rule."""
    for f in option_fields(type(obj)):
        value = getattr(obj, f.name)
        rule: Rule = f.metadata["rule"]
        if value is None:
            continue
        bad = False
        if rule.choices is not None:
            bad = value not in rule.choices
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and (
                math.isnan(value) or (math.isinf(value) and not rule.allow_inf)
            ):
                bad = True
            if rule.minimum is not None and (
                value < rule.minimum or (rule.exclusive_min and value == rule.minimum)
            ):
                bad = True
            if rule.maximum is not None and (
                value > rule.maximum or (rule.exclusive_max and value == rule.maximum)
            ):
                bad = True
        if bad:
            finite = "" if rule.allow_inf or rule.choices else " and finite"
            raise ConfigError(
                f"{flag(f.name)} must be {rule.describe()}{finite}; got {value!r}"
            )


def build(cls: type, values: Mapping[str, Any], source: str) -> Any:
    """Instantiate ``cls`` from raw values, coercing types; defaults fill the rest."""
    kwargs = {k: coerce(cls, k, v, source) for k, v in values.items()}
    obj = cls(**kwargs)
    check_rules(obj)
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    """Option fields of a dataclass instance as a plain dict."""
    return {f.name: getattr(obj, f.name) for f in option_fields(type(obj))}
