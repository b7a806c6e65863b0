"""Flower run config and node config <-> genefl options (no Flower import needed).

A Flower app's run config (``[tool.flwr.app.config]`` of its ``pyproject.toml``, and
``flwr run --run-config 'k=v ...'``) holds one key per ``genefl run`` option, spelled as
on the command line without the dashes in front (``known-rounds``, ``lambda1``), plus
the Flower-only options of :class:`FlowerOptions`. Run config values cannot be empty, so
an option that is unset (``--data-dir``, ``--output-dir``, ``--image-size``, ``--cache-dir``)
is the empty string.

Each SuperNode says in its node config which client of the federation it hosts:
``client-id`` (the federation's id: known clients are ``0..N-1``, agnostic clients
``N..N+M-1``), ``kind`` (``known`` or ``agnostic``, checked against the id), and where
its data is: ``dataset`` (must be the run's) and ``data-dir``; optional ``state-dir``
(a folder where the node keeps its client's model between rounds, so that it survives a
restart of the node or of the ServerApp) and ``device``. Under Flower's simulation
engine a node has only ``partition-id``: partition ``p`` hosts client ``p``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genefl.config import RunConfig, resolve, resolved_dict
from genefl.errors import ConfigError
from genefl.options import as_dict, build, option, option_fields

#: run config keys of genefl options that are not forwarded as ``None`` when empty
_OPTIONAL_EMPTY = ("data_dir", "output_dir", "image_size", "cache_dir")


@dataclass(frozen=True)
class FlowerOptions:
    """Options of a run on Flower (the rest are ``genefl run``'s)."""

    round_timeout: float = option(
        300.0, "seconds the server waits for a round's replies; a node that has not "
        "answered by then counts as a dropout", minimum=0, exclusive_min=True,
    )
    node_wait: float = option(
        600.0, "seconds the server waits for nodes: for every known client before the "
        "clustering, and for enough clients of a phase before a round",
        minimum=0, exclusive_min=True,
    )
    wait_for_all: bool = option(
        False, "each round waits (up to node-wait) until every client of its phase has a "
        "node, so that sampling does not depend on when nodes connect",
    )
    overwrite: bool = option(
        False, "start again in an output directory that holds a finished run",
    )


def key_of(name: str) -> str:
    """Run config key of an option: ``known_rounds`` -> ``known-rounds``."""
    return name.replace("_", "-")


def _scalar(value: Any) -> Any:
    return "" if value is None else value


def run_config_values(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full run config of a genefl Flower app: every run option, every registered
    method's options and :class:`FlowerOptions`, at their defaults overridden by
    ``values`` (option names with ``_`` or ``-``), validated.
    """
    from genefl.algorithms.registry import algorithm_names, get_algorithm_class

    given = {k.replace("-", "_"): v for k, v in (values or {}).items()}
    flower_part = {k: given.pop(k) for k in list(given) if k in FlowerOptions.__dataclass_fields__}
    flower = build(FlowerOptions, flower_part, "the run config")
    config, params = resolve(given, {}, source="the run config")
    out: dict[str, Any] = {}
    for key, value in resolved_dict(config, params).items():
        out[key_of(key)] = _scalar(value)
    for name in algorithm_names():
        cls = get_algorithm_class(name)
        if cls is type(params) or not option_fields(cls.params_cls):
            continue
        for f in option_fields(cls.params_cls):
            out.setdefault(key_of(f.name), _scalar(given.get(f.name, f.default)))
    for key, value in as_dict(flower).items():
        out[key_of(key)] = value
    return out


def options_from_run_config(
    run_config: Mapping[str, Any],
) -> tuple[RunConfig, Any, FlowerOptions]:
    """``(RunConfig, method params, FlowerOptions)`` from a run config (validated; a
    :class:`~genefl.errors.ConfigError` names a bad key).
    """
    values = {str(k).replace("-", "_"): v for k, v in run_config.items()}
    for name in _OPTIONAL_EMPTY:
        if values.get(name) == "":
            values[name] = None
    flower_part = {
        k: values.pop(k) for k in list(values) if k in FlowerOptions.__dataclass_fields__
    }
    flower = build(FlowerOptions, flower_part, "the run config")
    config, params = resolve(values, {}, source="the run config")
    return config, params, flower


@dataclass(frozen=True)
class NodeSpec:
    """Which client a SuperNode hosts and where its data is."""

    client_id: int
    kind: str
    dataset: str
    data_dir: str | None = None
    state_dir: str | None = None
    device: str | None = None


def node_spec(node_config: Mapping[str, Any], config: RunConfig) -> NodeSpec:
    """Read a node config (see the module docstring) against the run's configuration."""
    n, m = config.known_clients, config.agnostic_clients
    if "client-id" in node_config:
        try:
            cid = int(node_config["client-id"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"node config client-id must be an integer; got {node_config['client-id']!r}"
            ) from None
    elif "partition-id" in node_config:  # Flower's simulation engine
        cid = int(node_config["partition-id"])
    else:
        raise ConfigError(
            "node config needs client-id (and kind, dataset, data-dir): e.g. "
            "--node-config 'client-id=0 kind=\"known\" dataset=\"digits\"'"
        )
    if not 0 <= cid < n + m:
        raise ConfigError(
            f"node config client-id {cid} is outside the federation's clients 0..{n + m - 1} "
            f"({n} known, then {m} agnostic)"
        )
    expected = "known" if cid < n else "agnostic"
    kind = str(node_config.get("kind", expected))
    if kind not in ("known", "agnostic"):
        raise ConfigError(f"node config kind must be known or agnostic; got {kind!r}")
    if kind != expected:
        raise ConfigError(
            f"node config says client {cid} is {kind}, but with {n} known clients it is "
            f"{expected} (known ids 0..{n - 1}, agnostic {n}..{n + m - 1})"
        )
    dataset = str(node_config.get("dataset", config.dataset))
    if dataset.replace("_", "-").lower() != config.dataset:
        raise ConfigError(
            f"node config dataset {dataset!r} differs from the run's {config.dataset!r}"
        )

    def text(key: str, default: str | None) -> str | None:
        value = node_config.get(key, default)
        return None if value in (None, "") else str(value)

    return NodeSpec(
        client_id=cid, kind=kind, dataset=config.dataset,
        data_dir=text("data-dir", config.data_dir), state_dir=text("state-dir", None),
        device=text("device", None),
    )


def node_config_string(
    client_id: int, kind: str, dataset: str, data_dir: str | None = None,
    state_dir: str | None = None, device: str | None = None,
) -> str:
    """The ``--node-config`` value of ``flower-supernode`` for one client."""
    parts = [f"client-id={int(client_id)}", f'kind="{kind}"', f'dataset="{dataset}"']
    for key, value in (("data-dir", data_dir), ("state-dir", state_dir), ("device", device)):
        if value:
            parts.append(f'{key}="{value}"')
    return " ".join(parts)
