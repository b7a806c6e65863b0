"""Name -> algorithm class registry (``@register``), so the CLI lists what exists.

The built-in algorithms register on import of :mod:`genefl.algorithms`; methods of other
installed packages (entry-point group ``genefl.methods``, see :mod:`genefl.plugins`) are
loaded once, after them, the first time the registry is asked for a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from genefl.errors import ConfigError
from genefl.plugins import METHODS_GROUP, PluginError, describe, load_plugins

_REGISTRY: dict[str, type] = {}
#: name -> "<package> <version>" of the methods loaded from entry points; None until loaded
_PLUGINS: dict[str, str] | None = None
T = TypeVar("T", bound=type)


def _check(name: str, cls: Any) -> None:
    """Raise if ``cls`` cannot be registered as ``name``."""
    from genefl.algorithms.base import Algorithm
    from genefl.config import RunConfig

    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(
            f"algorithm {name!r} must be a subclass of genefl.algorithms.base.Algorithm; "
            f"got {describe(cls)}"
        )
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"algorithm {name!r} registered twice")
    params = cls.params_cls
    if not (isinstance(params, type) and is_dataclass(params)):
        raise TypeError(f"{cls.__name__}.params_cls must be a dataclass; got {describe(params)}")
    shadowed = sorted({f.name for f in fields(params)} & set(RunConfig.__dataclass_fields__))
    if shadowed:
        raise ValueError(
            f"{params.__name__} declares {', '.join(shadowed)}, which "
            f"{'is a run option' if len(shadowed) == 1 else 'are run options'}; rename "
            f"{'it' if len(shadowed) == 1 else 'them'}"
        )


def register(name: str) -> Callable[[T], T]:
    """Class decorator registering an :class:`~genefl.algorithms.base.Algorithm`."""

    def wrap(cls: T) -> T:
        _check(name, cls)
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return wrap


def _adopt(name: str, obj: Any) -> None:
    """Register an entry point's object as method ``name`` (raising if it cannot be)."""
    other = next((k for k, v in _REGISTRY.items() if v is obj and k != name), None)
    if other is not None:
        raise PluginError(
            f"{describe(obj)} registers itself as {other!r}; the entry point must have that name"
        )
    register(name)(obj)


def _load_builtin() -> None:
    """Register the built-in algorithms, then (once) the installed plugins."""
    global _PLUGINS
    import genefl.algorithms  # noqa: F401  (registers the built-in algorithms)

    if _PLUGINS is None:
        _PLUGINS = {}  # set first: a plugin that asks the registry does not load twice
        _PLUGINS.update(load_plugins(METHODS_GROUP, _REGISTRY, _adopt))


def algorithm_names() -> list[str]:
    """Registered names, in registration order (built-ins first, then plugins)."""
    _load_builtin()
    return list(_REGISTRY)


def algorithm_package(name: str) -> str | None:
    """``"<package> <version>"`` of a method loaded from an entry point, else ``None``."""
    _load_builtin()
    return (_PLUGINS or {}).get(name)


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
