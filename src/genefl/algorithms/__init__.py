"""Federated algorithms; importing this package registers the built-in ones."""

from genefl.algorithms import (  # noqa: F401  (registration, in table order)
    fedavg,
    fedbn,
    fedfina,
    fedlg,
    fedlp,
    fedlps,
    genefl,
    local,
    parfed,
)
from genefl.algorithms.base import Algorithm, ClientContext, LocalObjective, Upload
from genefl.algorithms.registry import algorithm_names, get_algorithm_class, register

__all__ = [
    "Algorithm",
    "ClientContext",
    "LocalObjective",
    "Upload",
    "algorithm_names",
    "get_algorithm_class",
    "register",
]
