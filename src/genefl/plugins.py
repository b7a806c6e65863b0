"""Methods and models from other installed packages, found through entry points.

A package makes a method or a model known to genefl by declaring an entry point in its
``pyproject.toml``; the entry point's name is the name genefl knows it by::

    [project.entry-points."genefl.methods"]
    my-fedx = "my_fedx:MyFedX"      # a subclass of genefl.algorithms.base.Algorithm

    [project.entry-points."genefl.models"]
    my-mlp = "my_models:mlp"        # a builder (in_channels, num_classes, image_size, generator)

Each registry loads its group once, the first time it is asked for its names, after the
built-ins. An entry point that fails (its import raises, its object is of the wrong kind,
its name is taken) is reported as a :class:`PluginWarning` naming the entry point, its
package and the error; whatever it registered is rolled back and the others still load.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, MutableMapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

#: entry-point group of federated methods (``--method``)
METHODS_GROUP = "genefl.methods"
#: entry-point group of model builders (``--model``)
MODELS_GROUP = "genefl.models"


class PluginWarning(UserWarning):
    """An installed plugin could not be loaded; the other plugins still were."""


class PluginError(Exception):
    """A loaded entry point is not what its group expects (raised by ``adopt``)."""


def package_of(entry_point: EntryPoint) -> str:
    """``"<distribution> <version>"`` of the package declaring ``entry_point``."""
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def load_plugins(
    group: str,
    registry: MutableMapping[str, Any],
    adopt: Callable[[str, Any], None],
) -> dict[str, str]:
    """Load every entry point of ``group`` into ``registry``.

    ``adopt(name, obj)`` checks the loaded object and registers it, raising on an object
    of the wrong kind. A name already in ``registry`` (a built-in or an earlier plugin)
    is not replaced. Returns ``name -> package`` of the entry points loaded.
    """
    loaded: dict[str, str] = {}
    for entry_point in entry_points(group=group):
        before = dict(registry)
        try:
            obj = entry_point.load()
            if entry_point.name in before and before[entry_point.name] is not obj:
                owner = loaded.get(entry_point.name, "genefl itself")
                raise PluginError(f"the name {entry_point.name!r} is already taken by {owner}")
            adopt(entry_point.name, obj)
        except Exception as exc:  # any plugin failure is reported, not fatal
            registry.clear()
            registry.update(before)
            error = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
            warnings.warn(
                PluginWarning(
                    f"plugin {entry_point.name!r} ({group} entry point "
                    f"'{entry_point.name} = {entry_point.value}' of package "
                    f"{package_of(entry_point)}) not loaded: {error}"
                ),
                stacklevel=2,
            )
        else:
            loaded[entry_point.name] = package_of(entry_point)
    return loaded


def describe(obj: Any) -> str:
    """What ``obj`` is, for error messages: ``function 'mod.f'``, ``module 'm'``, ..."""
    kind = "class" if isinstance(obj, type) else type(obj).__name__
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", None))
    if not isinstance(name, str):
        return f"an object of type {kind}"
    module = getattr(obj, "__module__", None)
    return f"{kind} '{module}.{name}'" if module and kind != "module" else f"{kind} '{name}'"
