"""Federated algorithms; importing this package registers the built-in ones."""

from genefl.algorithms import fedavg, genefl, local  # noqa: F401  (registration)
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
