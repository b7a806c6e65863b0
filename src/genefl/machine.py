"""What machine and which code produced a result: CPU, GPU, memory, OS, versions, commit.

Recorded in ``results.json`` (``run.machine``) by every run and shown by ``genefl report``.
Every probe is best-effort: a value that cannot be read is ``"unknown"``, never an error.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def physical_cores() -> int:
    """CPU cores this process may run on, hyperthread siblings counted once: the distinct
    ``(physical id, core id)`` pairs of ``/proc/cpuinfo`` among the CPUs of its affinity
    mask (Linux), else :func:`os.cpu_count`; at least 1.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    logical = len(allowed) if allowed else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(1, logical)
    cores = set()
    for block in text.strip().split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in
            (line.partition(":") for line in block.splitlines()) if k.strip()
        )
        if "processor" not in fields or "core id" not in fields:
            return max(1, logical)  # no topology given (some VMs, ARM): logical CPUs
        if allowed and int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, min(len(cores) or logical, logical))


def parent_pids() -> dict[int, int]:
    """Every process's parent, ``{pid: parent pid}``, from ``/proc`` (empty elsewhere)."""
    parents: dict[int, int] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return parents
    for entry in entries:
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process ended meanwhile
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (children, their children, ...), Linux only."""
    parents = parent_pids()
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        out += frontier
    return out


def memory_gib() -> float | str:
    """Physical memory in GiB (2^30 bytes), rounded to 0.1, or ``"unknown"``."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN
    return round(total / 2**30, 1)


def gpu_names() -> str:
    """The CUDA devices torch sees (``"; "``-separated), ``"none"``, or ``"unknown"``."""
    try:
        import torch

        if not torch.cuda.is_available():
            return "none"
        return "; ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken driver must not break a run or a report
        return UNKNOWN


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str:
    """The commit of genefl's source (``-dirty`` if it has local changes), or ``"unknown"``
    when genefl is not run from a git checkout (e.g. installed from a wheel).
    """
    package = Path(__file__).resolve().parent
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return UNKNOWN  # not tracked here: an installed copy, maybe inside another repository
    return _git(package, "describe", "--always", "--dirty", "--abbrev=12") or UNKNOWN


def package_version(module: str) -> str:
    """``module.__version__``, or ``"not installed"``."""
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """The machine and software of this process, as a flat JSON-ready dict."""
    from genefl import __version__

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count() or UNKNOWN,
        "physical_cores": physical_cores(),
        "gpu": gpu_names(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "numpy": package_version("numpy"),
        "genefl": __version__,
        "git_commit": git_commit(),
    }
