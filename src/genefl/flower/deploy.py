"""Writing a genefl Flower app and the commands that run it (no Flower import needed).

:func:`write_app` writes an app directory: a ``pyproject.toml`` whose
``[tool.flwr.app.components]`` are genefl's ServerApp and ClientApp (from the installed
package) and whose ``[tool.flwr.app.config]`` is the full run config (every ``genefl
run`` option, see :mod:`genefl.flower.runconfig`). :func:`write_flwr_home` writes a
Flower configuration (``$FLWR_HOME/config.toml``) naming a SuperLink connection, since
Flower 1.42 reads connections from there. :func:`run_command` and
:func:`node_config_string` give the ``flwr run`` command line and each SuperNode's
``--node-config``. ``genefl flower init DIR [options]`` does the first two from the
command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genefl.flower.runconfig import node_config_string, run_config_values

__all__ = [
    "SERVERAPP", "CLIENTAPP", "app_pyproject", "write_app", "write_flwr_home", "run_command",
    "node_config_string", "node_configs",
]

SERVERAPP = "genefl.flower.server_app:app"
CLIENTAPP = "genefl.flower.client_app:app"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string


def app_pyproject(values: Mapping[str, Any] | None = None, name: str = "genefl-app") -> str:
    """The app's ``pyproject.toml``: genefl's components and the run config (defaults
    overridden by ``values``, option names with ``_`` or ``-``; validated).
    """
    config = run_config_values(values)
    lines = [
        "# A genefl Flower app, written by `genefl flower init` (genefl.flower.deploy).",
        "# Run config keys are `genefl run` options without the leading dashes; override",
        "# them with `flwr run APP CONNECTION --run-config 'known-rounds=5 seed=1'`.",
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f'name = "{name}"',
        'version = "1.0.0"',
        'description = "GENE-FL (genefl) on Flower"',
        'license = "Apache-2.0"',
        "# genefl[flower] is installed where the SuperLink and the SuperNodes run; the app",
        "# declares no dependency so that Flower's runtime installation has nothing to fetch",
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "genefl"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVERAPP}"',
        f'clientapp = "{CLIENTAPP}"',
        "",
        "[tool.flwr.app.config]",
    ]
    lines += [f"{key} = {_toml_value(value)}" for key, value in config.items()]
    return "\n".join(lines) + "\n"


def write_app(app_dir: str | Path, values: Mapping[str, Any] | None = None,
              name: str = "genefl-app") -> Path:
    """Write the app directory (its ``pyproject.toml`` and a README); returns it."""
    folder = Path(app_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(app_pyproject(values, name))
    (folder / "README.md").write_text(
        "# genefl on Flower\n\nWritten by `genefl flower init`; see genefl's "
        "docs/flower.md, section \"Running genefl on Flower\".\n"
    )
    return folder


def write_flwr_home(
    home: str | Path, address: str, connection: str = "genefl",
    insecure: bool = False, root_certificates: str | Path | None = None,
) -> Path:
    """Write ``home/config.toml``, Flower's configuration, with one SuperLink connection
    (``address`` of the SuperLink's HTTP API, ``--host``/``--port`` of
    ``flower-superlink``, which in Flower 1.42 serves the Control, Fleet and Runtime
    APIs on one port, default 8000) made the
    default; run ``flwr`` with ``FLWR_HOME=home``. Returns the file.
    """
    folder = Path(home)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{connection}"', "", f"[superlink.{connection}]",
             f'address = "{address}"']
    if insecure:
        lines.append("insecure = true")
    if root_certificates is not None:
        lines.append(f"root-certificates = {json.dumps(str(root_certificates))}")
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_command(
    app_dir: str | Path, connection: str = "genefl",
    run_config: Mapping[str, Any] | None = None, stream: bool = True,
) -> list[str]:
    """The ``flwr run`` argv for the app, with run config overrides (option names with
    ``_`` or ``-``).
    """
    argv = ["flwr", "run", str(app_dir), connection]
    if run_config:
        pairs = " ".join(f"{k.replace('_', '-')}={_toml_value(v)}"
                         for k, v in run_config.items())
        argv += ["--run-config", pairs]
    if stream:
        argv.append("--stream")
    return argv


def node_configs(
    known_clients: int, agnostic_clients: int, dataset: str,
    data_dir: str | None = None, state_root: str | Path | None = None,
) -> dict[int, str]:
    """``--node-config`` of every client of a federation, by client id (known first)."""
    out = {}
    for cid in range(known_clients + agnostic_clients):
        kind = "known" if cid < known_clients else "agnostic"
        state = str(Path(state_root) / f"node-{cid}") if state_root is not None else None
        out[cid] = node_config_string(cid, kind, dataset, data_dir, state)
    return out


def describe(app_dir: Path, values: Mapping[str, Any], connection: str,
             extra: Sequence[str] = ()) -> str:
    """What ``genefl flower init`` prints: how to start the federation."""
    config = run_config_values(values)
    n, m = int(config["known-clients"]), int(config["agnostic-clients"])
    nodes = node_configs(n, m, str(config["dataset"]), str(config["data-dir"]) or None)
    first_agn = nodes[n] if m else ""
    return "\n".join([
        f"wrote {app_dir}/pyproject.toml ({len(config)} run config keys)",
        "start a SuperLink, one SuperNode per client, then the run, e.g. (insecure, one "
        "machine):",
        "  flower-superlink --insecure --port 9091 --disable-runtime-dependency-installation",
        f"  flower-supernode --insecure --superlink 127.0.0.1:9091 --port 9100 "
        f"--node-config '{nodes[0]}'",
        f"  ... one per client: known 0..{n - 1}"
        + (f", agnostic {n}..{n + m - 1} (e.g. '{first_agn}')" if m else "")
        + "; each node needs its own --port",
        f"  FLWR_HOME=DIR flwr run {app_dir} {connection} --stream   "
        "(DIR/config.toml: [superlink.{c}] address = \"127.0.0.1:9091\", insecure = true)"
        .replace("{c}", connection),
        *extra,
    ])
