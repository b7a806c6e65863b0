"""Run config <-> genefl options, node config, the app directory (no Flower needed,
except for checking the written app with Flower's own validator)."""

from __future__ import annotations

import math
import sys

import pytest

from genefl.algorithms.registry import algorithm_names
from genefl.cli import main
from genefl.config import resolve, resolved_dict
from genefl.errors import ConfigError
from genefl.flower.deploy import (
    CLIENTAPP,
    SERVERAPP,
    app_pyproject,
    node_configs,
    run_command,
    write_app,
    write_flwr_home,
)
from genefl.flower.runconfig import (
    FlowerOptions,
    node_config_string,
    node_spec,
    options_from_run_config,
    run_config_values,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.mark.parametrize("method", algorithm_names())
def test_default_run_config_resolves_to_the_cli_defaults(method: str) -> None:
    values = run_config_values({"method": method})
    config, params, flower = options_from_run_config(values)
    assert resolved_dict(config, params) == resolved_dict(*resolve({"method": method}, {}))
    assert flower == FlowerOptions()
    assert all(v is not None for v in values.values())  # Flower accepts no empty value


def test_run_config_keys_map_to_genefl_options() -> None:
    values = run_config_values({})
    values.update({"known-rounds": 7, "lambda1": 0.25, "data-dir": "/data", "seed": 3,
                   "round-timeout": 12.5, "max-update-ratio": math.inf})
    config, params, flower = options_from_run_config(values)
    assert (config.known_rounds, config.seed, config.data_dir) == (7, 3, "/data")
    assert params.lambda1 == 0.25
    assert config.max_update_ratio == math.inf
    assert flower.round_timeout == 12.5
    config, _, _ = options_from_run_config(run_config_values({}))
    assert config.data_dir is None and config.output_dir is None  # "" is unset


@pytest.mark.parametrize("bad, word", [
    ({"known-rounds": 0}, "known-rounds"),
    ({"round-timeout": 0}, "round-timeout"),
    ({"no-such-option": 1}, "no_such_option"),
    ({"method": "nope"}, "method"),
])
def test_bad_run_config_names_the_key(bad: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        options_from_run_config({**run_config_values({}), **bad})


def test_node_config_reads_client_kind_and_data() -> None:
    config, _, _ = options_from_run_config(run_config_values(
        {"known_clients": 3, "agnostic_clients": 2, "clients_per_round": 2, "clusters": 2}))
    spec = node_spec({"client-id": 4, "kind": "agnostic", "dataset": "digits",
                      "data-dir": "/d", "state-dir": "/s"}, config)
    assert (spec.client_id, spec.kind, spec.data_dir, spec.state_dir) == (4, "agnostic", "/d",
                                                                          "/s")
    assert node_spec({"partition-id": 1}, config).kind == "known"  # simulation nodes
    for bad, word in [({"client-id": 1, "kind": "agnostic"}, "known"),
                      ({"client-id": 5}, "outside"),
                      ({"client-id": 0, "dataset": "cifar10"}, "dataset"),
                      ({}, "client-id")]:
        with pytest.raises(ConfigError, match=word):
            node_spec(bad, config)


def test_node_config_string_is_what_flower_parses() -> None:
    from flwr.common.config import parse_config_args

    text = node_config_string(3, "agnostic", "digits", "/data dir", "/state")
    assert parse_config_args([text]) == {"client-id": 3, "kind": "agnostic",
                                         "dataset": "digits", "data-dir": "/data dir",
                                         "state-dir": "/state"}
    assert list(node_configs(2, 1, "digits")) == [0, 1, 2]


def test_app_pyproject_declares_components_and_run_config(tmp_path) -> None:
    folder = write_app(tmp_path / "app", {"known_rounds": 3, "method": "fedavg"})
    doc = tomllib.loads((folder / "pyproject.toml").read_text())
    app = doc["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": SERVERAPP, "clientapp": CLIENTAPP}
    assert app["config"] == run_config_values({"known_rounds": 3, "method": "fedavg"})
    assert doc["project"]["dependencies"] == []
    flwr_config = pytest.importorskip("flwr.common.config")
    ok, errors, _ = flwr_config.validate_config(doc, check_module=True, project_dir=folder)
    assert ok, errors
    with pytest.raises(ConfigError):
        app_pyproject({"clusters": 0})


def test_commands_and_flower_home(tmp_path) -> None:
    argv = run_command("APP", "link", {"known_rounds": 2, "method": "fedavg"})
    assert argv == ["flwr", "run", "APP", "link", "--run-config",
                    'known-rounds=2 method="fedavg"', "--stream"]
    path = write_flwr_home(tmp_path, "127.0.0.1:9091", "link", insecure=True)
    doc = tomllib.loads(path.read_text())
    assert doc["superlink"] == {"default": "link",
                                "link": {"address": "127.0.0.1:9091", "insecure": True}}


def test_genefl_flower_init_writes_the_app(tmp_path, capsys) -> None:
    folder = tmp_path / "app"
    assert main(["flower", "init", str(folder), "--method", "fedavg", "--known-rounds", "4",
                 "--round-timeout", "30"]) == 0
    config = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "config"]
    assert (config["method"], config["known-rounds"], config["round-timeout"]) == (
        "fedavg", 4, 30.0)
    assert "flower-supernode" in capsys.readouterr().out
    assert main(["flower", "init", str(folder), "--known-rounds", "0"]) == 2
