"""A method as its own package: install examples/plugin_method (FedPer) and compare it.

Does what a user would do in a shell, but installs into OUT/site instead of the current
environment (and without network):

    pip install ./examples/plugin_method
    genefl methods                                    # ... fedper ... [plugin: genefl-fedper 0.1.0]
    genefl compare --methods fedavg,fedper --output-dir OUT/compare

Usage: python examples/try_plugin.py [--tiny] [--out OUT]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import cli_options, parse_args, scale

PACKAGE = Path(__file__).resolve().parent / "plugin_method"


def install(package: Path, site: Path) -> None:
    """``pip install package`` into ``site`` (built from a copy: pip writes build files
    next to the sources).
    """
    sources = site.parent / "plugin-src"
    for folder in (sources, site):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(package, sources)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(site),
         str(sources)],
        check=True,
    )


def genefl(site: Path, *args: str) -> None:
    """Run the ``genefl`` command with ``site`` on the Python path; stop if it fails."""
    print("$ genefl " + " ".join(args), flush=True)
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    code = subprocess.run([sys.executable, "-m", "genefl.cli", *args], env=env).returncode
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    args = parse_args(__doc__, "plugin")
    site = args.out / "site"
    install(PACKAGE, site)
    genefl(site, "methods")
    genefl(site, "compare", "--methods", "fedavg,fedper", "--output-dir", str(args.out / "compare"),
           "--overwrite", *cli_options(scale(args.tiny)))
