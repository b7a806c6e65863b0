"""Name -> algorithm class registry (``@register``), so the CLI lists what exists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

from genefl.errors import ConfigError

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator registering an :class:`~genefl.algorithms.base.Algorithm`."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"algorithm {name!r} registered twice")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_builtin() -> None:
    import genefl.algorithms  # noqa: F401  (registers the built-in algorithms)


def algorithm_names() -> list[str]:
    """Registered names, in registration order."""
    _load_builtin()
    return list(_REGISTRY)


def get_algorithm_class(name: str) -> type:
    """The class registered as ``name`` or a ConfigError listing the known names."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"--method must be one of {', '.join(_REGISTRY)}; got {name!r}"
        ) from None


def all_param_names() -> set[str]:
    """Option names declared by any registered algorithm's params."""
    _load_builtin()
    return {f.name for cls in _REGISTRY.values() for f in fields(cls.params_cls)}
