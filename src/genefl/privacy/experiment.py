"""``genefl attack``: the privacy experiment of SPEC §8 / the paper's Fig. 4.

For each method the known phase is run as usual (same data, partition, clustering,
initial weights and client sampling for every method under a seed). The victims are the
clients whose upload the server accepted in the last known round (the same clients for
every method, absent dropouts). For victim image ``j`` the victim computes the gradient of
one batch of its own training images at its current weights; the server observes it on
the layers that client uploaded in that round only (SPEC §8), with Gaussian noise for a
``<method>-dp`` variant, and runs iDLG. Victims, images, the attacker's random weights
and the dummy's start are drawn from named streams of the seed, so they are the same for
every method: methods differ only in what they share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from genefl.algorithms.base import Upload
from genefl.algorithms.registry import algorithm_names
from genefl.callbacks.progress import say
from genefl.config import RunConfig
from genefl.data.datasets import ImageDataset
from genefl.engine.simulation import channel_stats, prepare_simulation, train_pixels
from genefl.engine.wire import payload_bytes, select_layers
from genefl.errors import ConfigError
from genefl.models import build_model, get_params, set_params
from genefl.models.layers import Layer, head_layer
from genefl.privacy.idlg import AttackSettings, infer_labels, invert_gradients, psnr
from genefl.privacy.observe import attacker_params, observed_gradients, shared_parameter_names
from genefl.seeding import numpy_rng, torch_generator

#: a method name with this suffix is the method with Gaussian noise on the shared gradient
DP_SUFFIX = "-dp"
DEFAULT_ATTACK_METHODS = ("fedavg", "fedavg-dp", "parfed", "fedlg", "genefl")
#: the row of the random-noise control (uniform random images, no attack)
NOISE_ROW = "random-noise"


@dataclass(frozen=True)
class AttackOptions:
    """What ``genefl attack`` does besides the run protocol."""

    #: victim batches attacked per method (``images`` x ``batch`` images in all)
    images: int = 4
    #: images per victim gradient (1 = iDLG's setting)
    batch: int = 1
    #: variance of the Gaussian noise of ``<method>-dp`` (the paper's sigma^2)
    dp_sigma2: float = 1e-3
    settings: AttackSettings = field(default_factory=AttackSettings)


@dataclass
class ImageResult:
    """One attacked image of one method."""

    method: str
    index: int
    client_id: int
    label: int
    #: the label of the reconstruction paired with this image
    recovered_label: int
    #: whether the true label is among the batch's recovered labels (multiset match)
    label_recovered: bool
    psnr: float
    #: the reconstruction and the original, ``(C, H, W)`` in ``[0, 1]``
    image: torch.Tensor
    original: torch.Tensor
    matching_loss: float = math.nan
    steps: int = 0
    labels_inferred: bool = False


@dataclass
class MethodAttack:
    """Everything the attack found for one method."""

    method: str
    exchanges: str
    #: every layer shared by at least one victim, in model order
    shared_layers: list[str]
    #: mean over victims of the bytes and the number of layers each shared
    shared_bytes: float
    shared_layer_count: float
    num_layers: int
    results: list[ImageResult]
    note: str = ""
    seconds: float = 0.0


def parse_attack_methods(spec: str | Sequence[str]) -> list[str]:
    """Comma-separated registered names, each optionally with ``-dp``; ``all`` = the
    paper's five (:data:`DEFAULT_ATTACK_METHODS`).
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(DEFAULT_ATTACK_METHODS)
    known = algorithm_names()
    bad = [n for n in names if base_method(n) not in known]
    if bad or not names:
        raise ConfigError(
            f"--methods must be 'all' or a comma-separated list of {', '.join(known)} (any "
            f"of them with '{DP_SUFFIX}' for Gaussian noise on the shared gradient); got "
            f"{','.join(bad or names) or 'nothing'!r}"
        )
    return list(dict.fromkeys(names))


def base_method(name: str) -> str:
    """``fedavg-dp`` -> ``fedavg``."""
    return name[: -len(DP_SUFFIX)] if name.endswith(DP_SUFFIX) else name


class UploadRecorder:
    """A transport that delivers every upload unchanged and remembers each client's last,
    tagged with the round ``round_of()`` reports (the engine's round counter).
    """

    def __init__(self) -> None:
        self.round_of: Callable[[], int] = lambda: 0
        self.last: dict[int, tuple[int, Upload]] = {}

    def __call__(self, upload: Upload) -> Upload:
        """Record ``upload`` as its sender's latest and deliver it."""
        self.last[upload.client_id] = (self.round_of(), upload)
        return upload


@dataclass
class Victim:
    """One attacked batch: a client's images and what it shared."""

    client_id: int
    #: pixels ``(B, C, H, W)`` in [0, 1] and labels ``(B,)``
    pixels: torch.Tensor
    labels: torch.Tensor
    #: the victim's weights when it computes the gradient (after its last local training)
    weights: dict[str, torch.Tensor]
    upload: Upload


def _victims(
    sim: Any, recorder: UploadRecorder, options: AttackOptions, mean: torch.Tensor,
    std: torch.Tensor,
) -> list[Victim]:
    """The attacked batches, drawn from the last round's accepted uploaders."""
    last_round = sim.engine.round - 1
    uploaders = sorted(
        cid for cid, (r, _) in recorder.last.items()
        if r == last_round and sim.engine.store.get(cid) is not None
    )
    victims = []
    for j in range(options.images if uploaders else 0):
        cid = uploaders[j % len(uploaders)]
        data = sim.clients[cid].train
        n = int(data.y.shape[0])
        if n < options.batch:
            raise ConfigError(
                f"--batch {options.batch}: victim client {cid} holds only {n} training "
                "images; choose a smaller --batch"
            )
        rng = numpy_rng(sim.config.seed, "attack", "images", j)
        idx = torch.from_numpy(np.sort(rng.choice(n, size=options.batch, replace=False)))
        idx = idx.to(data.x.device)
        x = data.x.index_select(0, idx)
        pixels = (x * std.to(x.device) + mean.to(x.device)).clamp(0, 1)
        weights = {k: v.clone() for k, v in sim.engine.store.get(cid).params.items()}
        victims.append(Victim(cid, pixels, data.y.index_select(0, idx), weights,
                              recorder.last[cid][1]))
    return victims


def _match(recon: torch.Tensor, originals: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pair reconstructions with originals (a batch comes back in any order) by maximal
    total PSNR: returns ``(order, psnr)``, the reconstruction index and PSNR per original.
    """
    b = originals.shape[0]
    table = np.zeros((b, b))
    for i in range(b):
        table[i] = psnr(recon, originals[i : i + 1].expand_as(recon)).numpy()
    finite = np.where(np.isfinite(table), table, 1e6)
    rows, cols = linear_sum_assignment(-finite)
    order = cols[np.argsort(rows)]
    return order, table[np.arange(b), order]


def _label_hits(found: torch.Tensor, truth: torch.Tensor) -> list[bool]:
    """Per true label, whether it is among the recovered ones (multiset match)."""
    pool = found.tolist()
    hits = []
    for y in truth.tolist():
        hits.append(y in pool)
        if y in pool:
            pool.remove(y)
    return hits


@dataclass
class Attacker:
    """The malicious server's tools: its model, random weights and attack settings."""

    model: torch.nn.Module
    layer_map: Mapping[str, Layer]
    #: the weights the server uses for every layer it never received
    random: Mapping[str, torch.Tensor]
    #: parameter name of the classifier head's weight (the iDLG label source)
    head_weight: str
    #: pixels in [0, 1] -> model input
    normalise: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    seed: int
    options: AttackOptions

    def attack(self, method: str, index: int, victim: Victim, sigma2: float) -> list[ImageResult]:
        """IDLG on what ``victim`` shared (noise of variance ``sigma2`` on it); one result
        per image of its batch, or none when its upload carries no parameters.
        """
        upload, options = victim.upload, self.options
        names = shared_parameter_names(self.layer_map, upload.layers)
        if not names:
            return []
        masks = {k: m for k, m in upload.masks.items() if k in names}
        observed = observed_gradients(
            self.model, victim.weights, names, self.normalise(victim.pixels), victim.labels,
            sigma2, torch_generator(self.seed, "attack", "dp", index),
        )
        set_params(self.model, attacker_params(
            victim.weights, self.random, self.layer_map, upload.layers, upload.masks
        ))
        labels = None
        if self.head_weight in observed and self.head_weight not in masks:
            labels = infer_labels(observed[self.head_weight], options.batch)
        recon = invert_gradients(
            self.model, observed, tuple(victim.pixels.shape), self.num_classes, self.normalise,
            torch_generator(self.seed, "attack", "dummy", index), labels, masks,
            options.settings,
        )
        originals = victim.pixels.detach().cpu()
        order, values = _match(recon.images, originals)
        found = recon.labels[torch.from_numpy(order)]
        hits = _label_hits(recon.labels, victim.labels.cpu())
        return [
            ImageResult(
                method=method, index=index * options.batch + b, client_id=victim.client_id,
                label=int(victim.labels[b]), recovered_label=int(found[b]),
                label_recovered=hits[b], psnr=float(values[b]), image=recon.images[order[b]],
                original=originals[b], matching_loss=recon.loss, steps=recon.steps,
                labels_inferred=recon.labels_inferred,
            )
            for b in range(options.batch)
        ]


def attack_method(
    names: Sequence[str],
    config: RunConfig,
    params: Any,
    dataset: ImageDataset,
    options: AttackOptions,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] = say,
    progress: bool = False,
) -> list[MethodAttack]:
    """Train one method's known phase, then attack its victims for each variant in
    ``names`` (the method itself and/or its ``-dp`` variant); ``progress`` shows a bar
    over the attacked victims.
    """
    t_start = time.perf_counter()
    recorder = UploadRecorder()
    sim = prepare_simulation(config, params, callbacks, dataset=dataset, transport=recorder)
    try:
        engine = sim.engine
        engine.callbacks.on_run_start({
            "total_rounds": config.known_rounds, "resume_round": 0, "config": {},
        })
        recorder.round_of = lambda: engine.round
        engine.run_phase(
            "known", sim.known_ids, config.known_rounds, config.clients_per_round
        )
        engine.callbacks.on_run_end({})
        mean, std = channel_stats(train_pixels(sim.dataset))
        mean, std = mean.to(sim.device), std.to(sim.device)

        def normalise(t: torch.Tensor) -> torch.Tensor:
            return (t - mean) / std

        victims = _victims(sim, recorder, options, mean, std)
        c, h, w = sim.dataset.image_shape
        random_model = build_model(
            config.model, c, sim.dataset.num_classes, h, torch_generator(config.seed, "attacker")
        )
        attacker = Attacker(
            model=engine.model, layer_map=engine.layer_map,
            random={k: v.to(sim.device) for k, v in get_params(random_model, sim.layers).items()},
            head_weight=f"{head_layer(sim.layers)}.weight", normalise=normalise,
            num_classes=sim.dataset.num_classes, seed=config.seed, options=options,
        )
        train_seconds = time.perf_counter() - t_start
        out = []
        for name in names:
            t0 = time.perf_counter()
            sigma2 = options.dp_sigma2 if name.endswith(DP_SUFFIX) else 0.0
            results: list[ImageResult] = []
            shared_bytes: list[int] = []
            layer_sets: list[tuple[str, ...]] = []
            bar = tqdm(
                victims, desc=f"{name} attack", unit="victim", disable=not progress,
                dynamic_ncols=True, leave=False,
            )
            for j, victim in enumerate(bar):
                layer_sets.append(victim.upload.layers)
                shared_bytes.append(payload_bytes(
                    select_layers(victim.weights, engine.layer_map, victim.upload.layers),
                    victim.upload.masks,
                ))
                results += attacker.attack(name, j, victim, sigma2)
            note = ""
            if not victims:
                note = "no client uploaded anything in the last round: nothing to attack"
            elif not results:
                note = "the uploads carry no parameters: nothing to attack"
            common = sorted(set().union(*layer_sets)) if layer_sets else []
            out.append(MethodAttack(
                method=name, exchanges=_exchanges(base_method(name), sigma2),
                shared_layers=[n for n in engine.layer_map if n in common],
                shared_bytes=float(np.mean(shared_bytes)) if shared_bytes else 0.0,
                shared_layer_count=(
                    float(np.mean([len(x) for x in layer_sets])) if layer_sets else 0.0
                ),
                num_layers=len(sim.layers), results=results, note=note,
                seconds=time.perf_counter() - t0 + (train_seconds if name == names[0] else 0),
            ))
            log(_brief(out[-1]))
        return out
    finally:
        sim.close()


def _exchanges(method: str, sigma2: float) -> str:
    from genefl.algorithms.registry import get_algorithm_class

    text = get_algorithm_class(method).exchanges
    return f"{text} + Gaussian noise (sigma^2 = {sigma2:g})" if sigma2 > 0 else text


def _brief(result: MethodAttack) -> str:
    if not result.results:
        return f"{result.method}: {result.note}"
    values = [r.psnr for r in result.results]
    labels = np.mean([r.label_recovered for r in result.results])
    return (
        f"{result.method}: PSNR mean {np.mean(values):.2f} dB (min {np.min(values):.2f}, "
        f"max {np.max(values):.2f}), labels recovered {100 * labels:.0f} %, "
        f"{result.shared_layer_count:g}/{result.num_layers} layers shared "
        f"({result.seconds:.0f} s)"
    )


def noise_baseline(originals: Sequence[torch.Tensor], seed: int) -> list[float]:
    """PSNR of uniform random images against the originals (what no attack achieves)."""
    gen = torch_generator(seed, "attack", "noise")
    return [float(psnr(torch.rand(o.shape, generator=gen), o.cpu())) for o in originals]


def run_attack(
    plan: Mapping[str, tuple[RunConfig, Any]],
    methods: Sequence[str],
    dataset: ImageDataset,
    options: AttackOptions,
    callbacks_for: Callable[[str], Sequence[Any]] = lambda method: (),
    log: Callable[[str], None] = say,
    progress: bool = False,
    on_method_done: Callable[[list[MethodAttack]], None] | None = None,
) -> list[MethodAttack]:
    """Attack every method in ``methods`` (``plan`` maps each base method to its resolved
    ``(config, params)``); the attacks come back in the order of ``methods``.
    ``on_method_done`` receives the attacks finished so far after each method (to write
    partial results that an interruption cannot lose).
    """
    by_base: dict[str, list[str]] = {}
    for name in methods:
        by_base.setdefault(base_method(name), []).append(name)
    found: dict[str, MethodAttack] = {}
    for base, variants in by_base.items():
        config, params = plan[base]
        for result in attack_method(
            variants, config, params, dataset, options, callbacks_for(base), log, progress
        ):
            found[result.method] = result
        if on_method_done is not None:
            on_method_done([found[name] for name in methods if name in found])
    return [found[name] for name in methods]
