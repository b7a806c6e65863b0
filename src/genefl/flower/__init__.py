"""Any genefl algorithm on Flower's Message API (optional: ``pip install 'genefl[flower]'``).

:func:`build_apps` returns a Flower ``ServerApp`` and ``ClientApp`` that run the known
phase of a federation round by round with the same per-client work as the in-process
:class:`~genefl.engine.rounds.Engine` (both call
:func:`genefl.engine.client.client_update`), so the two can be timed and compared.
Flower itself is imported only when the apps are built.
"""

from genefl.flower.apps import FlowerRun, build_apps, require_flwr

__all__ = ["FlowerRun", "build_apps", "require_flwr"]
