"""genefl as a Flower federation (optional: ``pip install 'genefl[flower]'``).

* :mod:`genefl.flower.server_app` — the ServerApp: the federation's server
  (:mod:`genefl.engine.server`, the same object ``genefl run`` drives) with the clients
  reached as Flower SuperNodes; ``app`` is the ``flwr run`` component;
* :mod:`genefl.flower.client_app` — the ClientApp: one node hosts one client and runs
  :func:`genefl.engine.client.client_update`; ``app`` is the component;
* :mod:`genefl.flower.runconfig` — run config / node config <-> genefl options;
* :mod:`genefl.flower.deploy` — writing a Flower app directory and the commands that run
  it (``genefl flower init``).

Flower itself is imported only by the two app modules.
"""

from genefl.flower.apps import require_flwr

__all__ = ["require_flwr"]
