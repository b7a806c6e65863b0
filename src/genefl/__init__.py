"""GENE-FL: gene-driven parameter-efficient dynamic federated learning.

``genefl.run(...)`` and ``genefl.compare(...)`` are the Python API (:mod:`genefl.api`,
``docs/api.md``); they, :class:`RunResult`, :class:`CompareResult`, :class:`RunConfig` and
:class:`ConfigError` are imported on first use, so ``import genefl`` stays cheap.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType  # (a plain `types` would be replaced by genefl.types)
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "run": "genefl.api",
    "compare": "genefl.api",
    "attack": "genefl.api",
    "RunResult": "genefl.api",
    "CompareResult": "genefl.api",
    "RunConfig": "genefl.config",
    "ConfigError": "genefl.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'genefl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(ModuleType):
    """The package: importing the submodule ``genefl.compare`` (the comparison's
    machinery) must not replace the function ``genefl.compare`` on it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, ModuleType):
            return  # the submodule stays importable as `from genefl.compare import ...`
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
