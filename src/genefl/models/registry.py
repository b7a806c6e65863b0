"""Name -> model builder registry (``@register_model``), so ``--model`` and ``genefl models``
list what exists.

A builder is a function ``(in_channels, num_classes, image_size, generator) -> nn.Module``
whose first docstring line describes the model. :func:`build_model` calls it; the module it
returns is moved to the CPU. Built-in models register on import of :mod:`genefl.models`;
builders of other installed packages (entry-point group ``genefl.models``, see
:mod:`genefl.plugins`) are loaded once, after them, the first time the registry is asked
for a name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from genefl.errors import ConfigError
from genefl.plugins import MODELS_GROUP, describe, load_plugins

#: ``(in_channels, num_classes, image_size, generator) -> nn.Module``
ModelBuilder = Callable[[int, int, int, torch.Generator], nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}
#: name -> "<package> <version>" of the models loaded from entry points; None until loaded
_PLUGINS: dict[str, str] | None = None


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Function decorator registering a model builder as ``--model name``.

    The builder should draw every weight from ``generator`` (:func:`~genefl.models.init.
    materialise` does so for convolutions, linear and normalisation layers, and for any
    module with a ``reset_parameters(generator)`` method).
    """

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if not callable(builder) or isinstance(builder, nn.Module):
            raise TypeError(
                f"model {name!r} must be a builder function (in_channels, num_classes, "
                f"image_size, generator) -> nn.Module; got {describe(builder)}"
            )
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def _adopt(name: str, obj: Any) -> None:
    """Register an entry point's object as model ``name`` (raising if it cannot be)."""
    register_model(name)(obj)


def _load_builtin() -> None:
    """Register the built-in models, then (once) the installed plugins."""
    global _PLUGINS
    import genefl.models  # noqa: F401  (registers the built-in models)

    if _PLUGINS is None:
        _PLUGINS = {}  # set first: a plugin that asks the registry does not load twice
        _PLUGINS.update(load_plugins(MODELS_GROUP, _REGISTRY, _adopt))


def model_names() -> list[str]:
    """Registered names, in registration order (built-ins first, then plugins)."""
    _load_builtin()
    return list(_REGISTRY)


def model_package(name: str) -> str | None:
    """``"<package> <version>"`` of a model loaded from an entry point, else ``None``."""
    _load_builtin()
    return (_PLUGINS or {}).get(name)


def get_model_builder(name: str) -> ModelBuilder:
    """The builder registered as ``name`` or a ConfigError listing the known names."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"--model must be one of {', '.join(_REGISTRY)} (see `genefl models`); "
            f"got {name!r}"
        ) from None


def model_description(name: str) -> str:
    """First line of the builder's docstring (empty if it has none)."""
    doc = (get_model_builder(name).__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _seed_of(generator: torch.Generator) -> int:
    """A global-RNG seed derived from the generator's state, without drawing from it."""
    state = generator.get_state().cpu().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(state).digest()[:8], "little") >> 1


def build_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    generator: torch.Generator,
) -> nn.Module:
    """Build model ``name`` on the CPU from its registered builder.

    The builder runs with the global torch RNG forked and seeded from ``generator``'s
    state, so a builder that draws from the global RNG (plain ``nn.Linear(...)``) is still
    determined by the run's seed and leaves the caller's global RNG untouched.
    """
    builder = get_model_builder(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_of(generator))
        model = builder(int(in_channels), int(num_classes), image_size, generator)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model builder {name!r} returned {type(model).__name__}, not a torch nn.Module"
        )
    return model.to("cpu")
