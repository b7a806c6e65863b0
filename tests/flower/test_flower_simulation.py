"""Flower's simulation engine runs the same GENE-FL federation as the in-process engine:
both phases, same byte counts, accuracies within float rounding (bounded: ~1 min)."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
pytest.importorskip("flwr")
pytest.importorskip("ray")

from test_flower_federation import ACCURACIES, BYTES, RUN, TOLERANCE  # noqa: E402

from genefl.config import resolve  # noqa: E402
from genefl.engine.simulation import run_simulation as run_in_process  # noqa: E402
from genefl.flower.client_app import make_client_app  # noqa: E402
from genefl.flower.runconfig import run_config_values  # noqa: E402
from genefl.flower.server_app import make_server_app  # noqa: E402


def test_flower_simulation_matches_the_in_process_engine(tmp_path):
    from flwr.simulation import run_simulation

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray worker trains with one thread
    try:
        reference = run_in_process(*resolve(RUN, {}))
    finally:
        torch.set_num_threads(threads)
    run_config = run_config_values({**RUN, "output_dir": str(tmp_path / "out")})
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.WARNING)
    try:
        run_simulation(
            make_server_app(run_config), make_client_app(run_config),
            num_supernodes=RUN["known_clients"] + RUN["agnostic_clients"],
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "include_dashboard": False,
                              "logging_level": logging.ERROR, "log_to_driver": False},
            },
        )
    finally:
        flwr_log.setLevel(level)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results) - {"run"} == set(reference)
    for key in BYTES:
        assert results[key] == reference[key], key
    for key in ACCURACIES:
        assert math.isclose(results[key], reference[key], abs_tol=TOLERANCE), key
    assert results["agnostic_joined"] == RUN["agnostic_clients"]
