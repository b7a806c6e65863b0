"""Issue 15, own method/model outside the package: entry points ``genefl.methods`` and
``genefl.models``, loaded lazily once; a broken plugin is a warning that names it, its
package and the error, and the others still load.

The fast tests hand the loader entry points of this module; the end-to-end ones install a
real plugin package (pyproject + module, written here) with pip and run the CLI on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from torch import nn

import genefl
import genefl.algorithms.registry as methods
import genefl.models.registry as models
import genefl.plugins as plugins
from genefl.algorithms.base import Algorithm
from genefl.algorithms.fedavg import FedAvg
from genefl.options import option

# -- objects the fake entry points point at ------------------------------------------------


class GoodMethod(Algorithm):
    """A plugin method (uploads everything, like FedAvg)."""

    exchanges = "everything (test)"


class Impostor(Algorithm):
    """Wants the name of a built-in."""


@dataclass(frozen=True)
class ShadowParams:
    lr: float = option(0.1, "shadows the run option --lr")


class Shadowing(Algorithm):
    """Declares an option the run config already has."""

    params_cls = ShadowParams


def not_a_class() -> None:
    """A function where a method class is expected."""


def good_builder(in_channels: int, num_classes: int, image_size: int,
                 generator: torch.Generator) -> nn.Module:
    """A plugin model (linear)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))


HERE = __name__


def entry(name: str, target: str, group: str = plugins.METHODS_GROUP) -> EntryPoint:
    return EntryPoint(name, f"{HERE}:{target}" if ":" not in target else target, group)


@pytest.fixture
def fresh_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registries holding only the built-ins, with the plugins not loaded yet."""
    methods.algorithm_names(), models.model_names()  # built-ins (and installed plugins)
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(methods, "_PLUGINS", None)
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "_PLUGINS", None)


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, eps: list[EntryPoint]) -> list[str]:
    """Make the loader see ``eps``; returns the list of groups it asked for."""
    asked: list[str] = []

    def entry_points(group: str) -> list[EntryPoint]:
        asked.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    return asked


def messages(record: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, plugins.PluginWarning)]


SELF_REGISTERING = """\
from genefl.algorithms.base import Algorithm
from genefl.algorithms.registry import register


@register("self-named")
class SelfRegistered(Algorithm):
    \"\"\"Registers itself on import, under another name than its entry point's.\"\"\"
"""


def test_broken_plugins_are_reported_by_name_and_the_good_ones_load(
    fresh_registries: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    builtins = list(methods._REGISTRY)  # loaded by the fixture
    (tmp_path / "genefl_test_self_registering.py").write_text(SELF_REGISTERING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "genefl_test_self_registering", raising=False)
    fake_entry_points(monkeypatch, [
        entry("other-name", "genefl_test_self_registering:SelfRegistered"),
        entry("bad-import", "genefl_no_such_module:Thing"),
        entry("good", "GoodMethod"),
        entry("function", "not_a_class"),
        entry("fedavg", "Impostor"),
        entry("shadow", "Shadowing"),
        entry("renamed", "genefl.algorithms.fedavg:FedAvg"),
        entry("good-model", "good_builder", plugins.MODELS_GROUP),
        entry("cnn", "good_builder", plugins.MODELS_GROUP),
    ])
    with pytest.warns(plugins.PluginWarning) as record:
        names = methods.algorithm_names()
    assert names == [*builtins, "good"]  # what a failed entry point registered is undone
    assert methods.get_algorithm_class("good") is GoodMethod and GoodMethod.name == "good"
    assert methods.get_algorithm_class("fedavg") is FedAvg and FedAvg.name == "fedavg"
    assert methods.algorithm_package("good") == "an unknown package"  # no distribution here
    assert methods.algorithm_package("fedavg") is None
    warned = messages(record)
    assert len(warned) == 6
    by_name = {m.split("'")[1]: m for m in warned}
    assert "ModuleNotFoundError: No module named 'genefl_no_such_module'" in by_name["bad-import"]
    assert "genefl.methods entry point 'bad-import = genefl_no_such_module:Thing'" in (
        by_name["bad-import"]
    )
    assert "subclass of genefl.algorithms.base.Algorithm" in by_name["function"]
    assert f"function '{HERE}.not_a_class'" in by_name["function"]
    assert "the name 'fedavg' is already taken by genefl itself" in by_name["fedavg"]
    assert "ShadowParams declares lr, which is a run option" in by_name["shadow"]
    assert "registers itself as 'fedavg'" in by_name["renamed"]
    assert "registers itself as 'self-named'; the entry point must have that name" in (
        by_name["other-name"]
    )

    with pytest.warns(plugins.PluginWarning) as record:
        names = models.model_names()
    assert "good-model" in names and models.get_model_builder("cnn") is not good_builder
    assert [m.split("'")[1] for m in messages(record)] == ["cnn"]


def test_plugins_load_lazily_once(fresh_registries: None, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_entry_points(monkeypatch, [entry("good", "GoodMethod")])
    import genefl.cli  # noqa: F401  (importing genefl, its registries and CLI loads nothing)

    assert asked == []
    assert "good" in methods.algorithm_names()
    methods.get_algorithm_class("good")
    methods.all_param_names()
    assert asked == [plugins.METHODS_GROUP]


def test_register_checks_what_it_is_given(fresh_registries: None) -> None:
    with pytest.raises(TypeError, match="must be a subclass of genefl.algorithms.base"):
        methods.register("x")(not_a_class)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="declares lr, which is a run option"):
        methods.register("x")(Shadowing)
    with pytest.raises(TypeError, match="must be a builder function"):
        models.register_model("x")(nn.Linear(2, 2))  # type: ignore[arg-type]
    assert "x" not in methods.algorithm_names() and "x" not in models.model_names()


# -- a real plugin package, installed with pip -----------------------------------------------

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "my-fedx"
version = "0.1.0"
dependencies = ["genefl"]

[project.entry-points."genefl.methods"]
my-fedx = "my_fedx:MyFedX"
my-broken = "my_fedx_broken:Broken"
my-wrong = "my_fedx:helper"

[project.entry-points."genefl.models"]
my-mlp = "my_fedx:mlp"

[tool.setuptools]
py-modules = ["my_fedx", "my_fedx_broken"]
"""

MODULE = '''\
"""A plugin method and model for genefl (test)."""
from dataclasses import dataclass

from torch import nn

from genefl.algorithms.base import Algorithm
from genefl.models import materialise
from genefl.options import option


@dataclass(frozen=True)
class MyFedXParams:
    fedx_share: float = option(1.0, "share of the layers uploaded", minimum=0,
                               maximum=1, exclusive_min=True)


class MyFedX(Algorithm):
    """Uploads the first share of its layers."""

    params_cls = MyFedXParams
    exchanges = "first layers"

    def select_upload(self, before, after, ctx):
        keep = max(1, round(self.params.fedx_share * len(self.layers)))
        return self.all_layer_names[:keep]


def mlp(in_channels, num_classes, image_size, generator):
    """Plugin MLP."""
    return materialise(lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size**2, 32), nn.ReLU(),
        nn.Linear(32, num_classes)), generator)


def helper():
    """Not a method."""
'''

BROKEN = 'import genefl_plugin_dependency_that_is_missing  # noqa: F401\n'


def pip_install(project: Path, target: Path) -> None:
    """Install ``project`` into ``target`` as pip would for a user (no index, no deps)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--no-cache-dir",
         "--target", str(target), str(project)],
        check=True, capture_output=True, text=True, timeout=300,
    )


def genefl_env(site: Path) -> dict[str, str]:
    """The environment of a ``genefl`` subprocess that sees ``site`` and this genefl."""
    src = Path(genefl.__file__).resolve().parents[1]
    paths = [str(site), str(src), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("my-fedx")
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "my_fedx.py").write_text(MODULE)
    (project / "my_fedx_broken.py").write_text(BROKEN)
    site = tmp_path_factory.mktemp("site")
    pip_install(project, site)
    return site


def cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genefl.cli", *args], cwd=cwd, env=genefl_env(site),
        capture_output=True, text=True, timeout=600,
    )


def test_installed_plugin_is_listed_and_broken_ones_are_named(
    plugin_site: Path, tmp_path: Path
) -> None:
    proc = cli(plugin_site, "methods", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert {"genefl", "fedavg", "local", "my-fedx"} <= set(listed)
    assert "[plugin: my-fedx 0.1.0]" in listed["my-fedx"]
    assert "uploads: first layers" in listed["my-fedx"]
    assert "my-broken" not in listed and "my-wrong" not in listed
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 2, proc.stderr
    broken = next(w for w in warnings if "'my-broken'" in w)
    assert broken.startswith("genefl: warning: plugin 'my-broken'")
    assert "package my-fedx 0.1.0" in broken
    assert "ModuleNotFoundError: No module named 'genefl_plugin_dependency_that_is_missing'" in (
        broken
    )
    wrong = next(w for w in warnings if "'my-wrong'" in w)
    assert "must be a subclass of genefl.algorithms.base.Algorithm; got function " in wrong

    proc = cli(plugin_site, "models", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("my-mlp") and "Plugin MLP.  [plugin: my-fedx 0.1.0]" in line
               for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.e2e
def test_installed_plugin_method_and_model_run(plugin_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli(
        plugin_site, "run", "--method", "my-fedx", "--model", "my-mlp", "--fedx-share", "0.5",
        "--known-rounds", "2", "--agnostic-rounds", "1", "--local-epochs", "1",
        "--known-clients", "4", "--agnostic-clients", "4", "--clusters", "2",
        "--clients-per-round", "2", "--train-fraction", "0.3", "--device", "cpu", "--quiet",
        "--output-dir", str(out), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "my-fedx" and results["run"]["config"]["model"] == "my-mlp"
    assert results["run"]["config"]["fedx_share"] == 0.5
    # the plugin's select_upload ran: 1 of the MLP's 2 layers, every round
    assert 0 < results["upload_bytes"] < results["full_model_upload_bytes"]
