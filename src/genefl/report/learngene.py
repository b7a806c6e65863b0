"""What a learnGene is made of (issue 12): which layers the layer score picks as gamma goes
from all layers down to the floor, and their share of the model's bytes.

Read from a finished run directory: ``rounds.csv`` (``gamma`` and ``phase`` per round),
``clients.jsonl`` (each client's ``upload_layers`` and ``upload_bytes``) and
``results.json`` (the run's layer table, ``learngene_layers`` — what a new client downloads —
and ``model_bytes``). The paper's score (Eq. 9, ``cos / numel``) favours small layers:
with equal cosines it picks the ``gamma`` layers with the fewest parameters, which
:func:`smallest_layers` gives for comparison. The paper's ResNet-18 learnGene is
9.04 of 42.66 MB (21.2 %).

Everything but :func:`load_run` and :func:`write_report` is a pure function of records.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genefl.algorithms.base import RoundReport
from genefl.algorithms.learngene import ClusterLearnGenes
from genefl.method.condense import top_layers

MIB = 2**20
#: the paper's cluster learnGene and model sizes on ResNet-18 (MB = 2^20 bytes, SPEC §4)
PAPER_LEARNGENE_MB = 9.04
PAPER_MODEL_MB = 42.66
PAPER_SHARE = PAPER_LEARNGENE_MB / PAPER_MODEL_MB
#: files :func:`write_report` writes into the run directory
LEARNGENE_FILES = ("learngene.md", "learngene.csv", "learngene_layers.csv")
KINDS = ("conv", "norm", "linear")


@dataclass(frozen=True)
class LayerSize:
    """One layer's kind, parameter count (what Eq. 9 divides by) and wire bytes."""

    name: str
    kind: str
    params: int
    nbytes: int


@dataclass(frozen=True)
class UploadRecord:
    """One accepted client upload."""

    round: int
    phase: str
    cluster: int
    layers: tuple[str, ...]
    nbytes: int


@dataclass(frozen=True)
class GammaRow:
    """The uploads of one phase sent with one ``gamma``."""

    phase: str
    gamma: int | None
    rounds: tuple[int, ...]
    uploads: int
    #: layer -> number of these uploads that carried it, in model order
    picks: dict[str, int]
    #: kind -> (mean layers of that kind per upload, mean share of the model's bytes)
    kinds: dict[str, tuple[float, float]]
    mean_bytes: float
    share: float
    #: share of the model's bytes of the ``gamma`` smallest layers (Eq. 9, equal cosines)
    smallest_share: float | None


@dataclass(frozen=True)
class FinalLearnGene:
    """One cluster's learnGene at the end of the known phase (SPEC §4)."""

    cluster: int
    #: the layers chosen by at least half of the cluster's last known participants
    layers: tuple[str, ...]
    nbytes: int
    #: what a new client downloads (``results.json``'s ``learngene_layers``)
    package: tuple[str, ...]
    package_bytes: int


def layer_sizes(table: Iterable[Mapping[str, Any]]) -> list[LayerSize]:
    """:class:`LayerSize` rows from a layer table (:func:`~genefl.models.layers.layer_table`)."""
    return [
        LayerSize(str(r["name"]), str(r["kind"]), int(r["params"]), int(r["bytes"]))
        for r in table
    ]


def uploads_from_clients(records: Iterable[Mapping[str, Any]]) -> list[UploadRecord]:
    """The accepted uploads among ``clients.jsonl`` records (dropped or rejected ones and
    clients that sent nothing are left out).
    """
    return [
        UploadRecord(int(r["round"]), str(r["phase"]), int(r["cluster"]),
                     tuple(r["upload_layers"]), int(r["upload_bytes"]))
        for r in records
        if r["upload_layers"] and not r.get("dropped") and not r.get("rejected")
    ]


def gammas_by_round(rows: Iterable[Mapping[str, Any]]) -> dict[int, int | None]:
    """``round -> gamma`` from ``rounds.csv`` rows (``None`` where the method has none)."""
    out: dict[int, int | None] = {}
    for r in rows:
        g = r.get("gamma")
        out[int(r["round"])] = None if g in (None, "") else int(float(g))
    return out


def smallest_layers(layers: Sequence[LayerSize], gamma: int) -> list[str]:
    """What Eq. 9 picks when every layer's cosine is equal: the ``gamma`` layers with the
    fewest parameters (ties by model order), in model order.
    """
    return top_layers({la.name: 1.0 / max(la.params, 1) for la in layers}, gamma)


def _bytes_of(names: Iterable[str], sizes: Mapping[str, LayerSize]) -> int:
    return sum(sizes[n].nbytes for n in names)


def composition(
    uploads: Sequence[UploadRecord],
    gammas: Mapping[int, int | None],
    layers: Sequence[LayerSize],
) -> list[GammaRow]:
    """One row per phase and ``gamma`` value, in order of first use: how often each layer
    was uploaded, the kinds and the mean share of the model's bytes per upload.
    """
    sizes = {la.name: la for la in layers}
    model = sum(la.nbytes for la in layers)
    groups: dict[tuple[str, int | None], list[UploadRecord]] = {}
    for up in sorted(uploads, key=lambda u: u.round):
        groups.setdefault((up.phase, gammas.get(up.round)), []).append(up)
    rows = []
    for (phase, gamma), ups in groups.items():
        counts = dict.fromkeys((la.name for la in layers), 0)
        for up in ups:
            for name in up.layers:
                counts[name] += 1
        kinds = {}
        for kind in dict.fromkeys(la.kind for la in layers):
            names = [n for n, c in counts.items() if c and sizes[n].kind == kind]
            kinds[kind] = (
                sum(counts[n] for n in names) / len(ups),
                sum(counts[n] * sizes[n].nbytes for n in names) / len(ups) / model,
            )
        mean_bytes = sum(up.nbytes for up in ups) / len(ups)
        rows.append(GammaRow(
            phase=phase, gamma=gamma, rounds=tuple(sorted({up.round for up in ups})),
            uploads=len(ups), picks={n: c for n, c in counts.items() if c}, kinds=kinds,
            mean_bytes=mean_bytes, share=mean_bytes / model,
            smallest_share=None if gamma is None
            else _bytes_of(smallest_layers(layers, gamma), sizes) / model,
        ))
    return rows


def final_learngenes(
    uploads: Sequence[UploadRecord],
    layers: Sequence[LayerSize],
    head: str,
    packages: Mapping[int, Sequence[str]],
) -> list[FinalLearnGene]:
    """Each cluster's learnGene at the end of the known phase, as the server forms it
    (:class:`~genefl.algorithms.learngene.ClusterLearnGenes` fed the known rounds'
    uploads), with the package a new client downloads (``packages``, by cluster).
    """
    sizes = {la.name: la for la in layers}
    clusters = sorted({up.cluster for up in uploads} | set(packages))
    genes = ClusterLearnGenes([la.name for la in layers], head, max(clusters, default=-1) + 1)
    by_round: dict[int, dict[int, list[tuple[str, ...]]]] = {}
    for up in uploads:
        if up.phase == "known":
            by_round.setdefault(up.round, {}).setdefault(up.cluster, []).append(up.layers)
    for rnd in sorted(by_round):
        genes.record(RoundReport(rnd, "known", [], math.nan, by_round[rnd]))
    out = []
    for k in clusters:
        chosen = tuple(genes.layers(k))
        package = tuple(packages.get(k, ()))
        out.append(FinalLearnGene(k, chosen, _bytes_of(chosen, sizes), package,
                                  _bytes_of(package, sizes)))
    return out


def kind_counts(names: Iterable[str], layers: Sequence[LayerSize]) -> str:
    """``"norm 7, conv 2"``: how many of ``names`` are of each kind (kinds in model order)."""
    kind = {la.name: la.kind for la in layers}
    counts: dict[str, int] = {}
    for name in names:
        counts[kind[name]] = counts.get(kind[name], 0) + 1
    return ", ".join(f"{k} {c}" for k, c in counts.items()) or "none"


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _rounds(rounds: Sequence[int]) -> str:
    """``"0-3, 7"``: consecutive rounds as ranges."""
    parts, start = [], None
    for i, r in enumerate(rounds):
        if start is None:
            start = r
        if i + 1 == len(rounds) or rounds[i + 1] != r + 1:
            parts.append(str(r) if r == start else f"{start}-{r}")
            start = None
    return ", ".join(parts)


def _picked(row: GammaRow, limit: int = 12) -> str:
    """Layers carried by at least half of the group's uploads, with how often."""
    common = [(n, c) for n, c in row.picks.items() if 2 * c >= row.uploads]
    text = ", ".join(f"{n} {c}/{row.uploads}" for n, c in common[:limit])
    rest = len(row.picks) - min(len(common), limit)
    return text + (f" (+{rest} less often)" if rest else "")


def format_markdown(
    title: str,
    layers: Sequence[LayerSize],
    rows: Sequence[GammaRow],
    finals: Sequence[FinalLearnGene],
    floor: int | None,
) -> str:
    """The report: layers picked per gamma, the final learnGene against the paper's 21 %,
    and every layer's kind and size.
    """
    model = sum(la.nbytes for la in layers)
    params = sum(la.params for la in layers)
    lines = [
        f"# learnGene composition: {title}", "",
        f"Model: {len(layers)} layers ({kind_counts([la.name for la in layers], layers)}), "
        f"{params:,} parameters, {model:,} bytes ({model / MIB:.3f} MB) on the wire.", "",
        "## Layers uploaded per gamma", "",
        "Mean per upload; *equal-cos* is the share of the gamma smallest layers, what "
        "Eq. 9 (cos / numel) picks when every layer moved alike.", "",
        "| phase | gamma | rounds | uploads | share of model | equal-cos | "
        + " | ".join(KINDS) + " | layers in >= half the uploads |",
        "|---" * (7 + len(KINDS)) + "|",
    ]
    for r in rows:
        kinds = " | ".join(
            f"{r.kinds[k][0]:.1f} ({_pct(r.kinds[k][1])})" if k in r.kinds else "-"
            for k in KINDS
        )
        lines.append(
            f"| {r.phase} | {'-' if r.gamma is None else r.gamma} | {_rounds(r.rounds)} | "
            f"{r.uploads} | {_pct(r.share)} | {_pct(r.smallest_share)} | {kinds} | "
            f"{_picked(r)} |"
        )
    lines += ["", "## Final learnGene (end of the known phase)", "",
              "Layers chosen by at least half of each cluster's last known participants; "
              "a new client downloads them without the classifier head.", "",
              "| cluster | layers | kinds | bytes | share | downloaded by a new client | share |",
              "|---|---|---|---|---|---|---|"]
    for f in finals:
        lines.append(
            f"| {f.cluster} | {', '.join(f.layers) or '-'} | {kind_counts(f.layers, layers)} "
            f"| {f.nbytes:,} | {_pct(f.nbytes / model)} | {f.package_bytes:,} | "
            f"{_pct(f.package_bytes / model)} |"
        )
    share = learngene_share(finals, model)
    if share is not None:
        lines += ["", f"**Eq. 9's final learnGene: {share * model / MIB:.4f} of "
                  f"{model / MIB:.4f} MB ({_pct(share)}) per cluster, as downloaded; the "
                  f"paper's ResNet-18: {PAPER_LEARNGENE_MB} of {PAPER_MODEL_MB} MB "
                  f"({_pct(PAPER_SHARE, 1)}).**"]
    if floor is not None:
        small = smallest_layers(layers, floor)
        small_bytes = _bytes_of(small, {la.name: la for la in layers})
        lines += ["", f"At the floor, gamma = {floor}, the {floor} smallest layers "
                  f"({kind_counts(small, layers)}) are {small_bytes:,} bytes "
                  f"({_pct(small_bytes / model)}) of the model."]
    lines += ["", "## Every layer", "",
              "Size rank 1 = fewest parameters (Eq. 9's favourite at equal cosines).", "",
              "| # | layer | kind | params | bytes | share | size rank |",
              "|---|---|---|---|---|---|---|"]
    order = sorted(range(len(layers)), key=lambda i: (layers[i].params, i))
    rank = {layers[i].name: r + 1 for r, i in enumerate(order)}
    for i, la in enumerate(layers):
        lines.append(f"| {i} | {la.name} | {la.kind} | {la.params:,} | {la.nbytes:,} | "
                     f"{_pct(la.nbytes / model)} | {rank[la.name]} |")
    return "\n".join(lines) + "\n"


def learngene_share(finals: Sequence[FinalLearnGene], model_bytes: int) -> float | None:
    """Mean share of the model's bytes of what new clients download (``None`` if no
    cluster).
    """
    if not finals or model_bytes <= 0:
        return None
    return sum(f.package_bytes for f in finals) / len(finals) / model_bytes


def composition_csv(rows: Sequence[GammaRow]) -> str:
    """``learngene.csv``: one line per phase and gamma."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["phase", "gamma", "rounds", "uploads", "mean_upload_bytes", "share",
                     "equal_cos_share", *(f"{k}_layers" for k in KINDS),
                     *(f"{k}_share" for k in KINDS), "picks"])
    for r in rows:
        writer.writerow([
            r.phase, "" if r.gamma is None else r.gamma, _rounds(r.rounds), r.uploads,
            f"{r.mean_bytes:.1f}", f"{r.share:.6f}",
            "" if r.smallest_share is None else f"{r.smallest_share:.6f}",
            *(f"{r.kinds[k][0]:.3f}" if k in r.kinds else "" for k in KINDS),
            *(f"{r.kinds[k][1]:.6f}" if k in r.kinds else "" for k in KINDS),
            ";".join(f"{n}:{c}" for n, c in r.picks.items()),
        ])
    return buf.getvalue()


def layers_csv(layers: Sequence[LayerSize], uploads: Sequence[UploadRecord],
               finals: Sequence[FinalLearnGene]) -> str:
    """``learngene_layers.csv``: every layer's kind and size, how many known-phase uploads
    carried it and how many clusters' final learnGene hold it.
    """
    model = sum(la.nbytes for la in layers)
    known = [up for up in uploads if up.phase == "known"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["layer", "kind", "params", "bytes", "share", "known_uploads",
                     "known_upload_rate", "final_clusters"])
    for la in layers:
        carried = sum(la.name in up.layers for up in known)
        writer.writerow([
            la.name, la.kind, la.params, la.nbytes, f"{la.nbytes / model:.6f}", carried,
            f"{carried / len(known):.4f}" if known else "",
            sum(la.name in f.layers for f in finals),
        ])
    return buf.getvalue()


@dataclass(frozen=True)
class RunRecords:
    """What :func:`load_run` reads from a run directory."""

    title: str
    layers: list[LayerSize]
    uploads: list[UploadRecord]
    gammas: dict[int, int | None]
    packages: dict[int, list[str]]
    head: str
    floor: int | None


def _rebuilt_layer_table(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The layer table of a run whose results.json predates it: the model rebuilt from
    the run's configuration (loads the data set for its shape).
    """
    import torch

    from genefl.config import resolve
    from genefl.data.datasets import load_dataset
    from genefl.models import build_model, list_layers
    from genefl.models.layers import layer_table

    cfg, _ = resolve({k: v for k, v in config.items() if v is not None}, {})
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.cache_dir)
    c, h, _ = data.image_shape
    model = build_model(cfg.model, c, data.num_classes, h, torch.Generator())
    return layer_table(list_layers(model))


def _floor(config: Mapping[str, Any], num_layers: int) -> int | None:
    """GENE-FL's gamma floor in layers (``None`` for other methods)."""
    if config.get("method") != "genefl":
        return None
    from genefl.algorithms.genefl import GeneFLParams, gamma_bounds

    params = GeneFLParams(**{k: config[k] for k in ("gamma_start", "gamma_floor")
                             if k in config})
    return gamma_bounds(params, num_layers)[1]


def load_run(run_dir: Path) -> RunRecords:
    """Read a finished run directory (results.json, rounds.csv, clients.jsonl)."""
    from genefl.errors import ConfigError

    run_dir = Path(run_dir)
    missing = [n for n in ("results.json", "rounds.csv", "clients.jsonl")
               if not (run_dir / n).exists()]
    if missing:
        raise ConfigError(f"{run_dir}: no {', '.join(missing)}; give the output directory "
                          "of a finished `genefl run`")
    results = json.loads((run_dir / "results.json").read_text())
    run = results.get("run", {})
    config = run.get("config", {})
    layers = layer_sizes(run.get("layer_table") or _rebuilt_layer_table(config))
    with (run_dir / "rounds.csv").open(newline="") as fh:
        gammas = gammas_by_round(csv.DictReader(fh))
    with (run_dir / "clients.jsonl").open() as fh:
        uploads = uploads_from_clients(json.loads(line) for line in fh if line.strip())
    head = results.get("algorithm", {}).get("classifier_head") or next(
        (la.name for la in reversed(layers) if la.kind == "linear"), ""
    )
    title = (f"{results.get('method')} on {results.get('dataset')}, "
             f"{config.get('model', '?')}, seed {results.get('seed')}")
    packages = {int(k): list(v) for k, v in results.get("learngene_layers", {}).items()}
    return RunRecords(title, layers, uploads, gammas, packages, head,
                      _floor(config, len(layers)))


def write_report(run_dir: Path) -> str:
    """Write :data:`LEARNGENE_FILES` into ``run_dir``; return the markdown."""
    run_dir = Path(run_dir)
    rec = load_run(run_dir)
    rows = composition(rec.uploads, rec.gammas, rec.layers)
    finals = final_learngenes(rec.uploads, rec.layers, rec.head, rec.packages)
    text = format_markdown(rec.title, rec.layers, rows, finals, rec.floor)
    (run_dir / "learngene.md").write_text(text)
    (run_dir / "learngene.csv").write_text(composition_csv(rows))
    (run_dir / "learngene_layers.csv").write_text(layers_csv(rec.layers, rec.uploads, finals))
    return text
