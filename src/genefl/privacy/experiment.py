"""``genefl attack``: the privacy experiment of SPEC §8 / the paper's Fig. 4, by round.

For each method the known phase is run once, as usual (same data, partition, clustering,
initial weights and client sampling for every method under a seed). After each attacked
round ``r`` (``--attack-rounds``) the victims are the clients whose upload reached the
server in round ``r`` (the same clients for every method, absent dropouts); their weights
right after that round's local training and their upload are kept. After training, for
victim image ``j`` of round ``r`` the victim computes the gradient of one batch of its own
training images at those weights; the server observes it on the layers that client
uploaded in round ``r`` only (SPEC §8), with Gaussian noise for a ``<method>-dp``
variant, and runs each chosen attack (iDLG, Inverting Gradients). Victims, images, the
attacker's random weights and the dummies' starts are drawn from named streams of the
seed, so they are the same for every method: methods differ only in what they share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from genefl.algorithms.base import Upload
from genefl.callbacks.progress import say
from genefl.config import RunConfig
from genefl.data.datasets import ImageDataset
from genefl.engine.simulation import prepare_simulation
from genefl.engine.wire import payload_bytes, select_layers
from genefl.errors import ConfigError
from genefl.models import build_model, get_params, set_params
from genefl.models.layers import Layer, head_layer
from genefl.privacy.gradients import Reconstruction, infer_labels
from genefl.privacy.idlg import reconstruct_idlg
from genefl.privacy.ig import reconstruct_ig
from genefl.privacy.metrics import psnr, ssim
from genefl.privacy.observe import attacker_params, observed_gradients, shared_parameter_names
from genefl.privacy.options import (  # noqa: F401  (re-exported)
    DEFAULT_ATTACK_METHODS,
    DP_SUFFIX,
    AttackOptions,
    base_method,
    parse_attack_methods,
)
from genefl.seeding import numpy_rng, torch_generator

#: the rows of the random-noise control (uniform random images, no attack)
NOISE_ROW = "random-noise"
ATTACK_NAMES = {"idlg": "iDLG", "ig": "Inverting Gradients"}


@dataclass
class ImageResult:
    """One attacked image of one method, round and attack."""

    method: str
    round: int
    attack: str
    index: int
    client_id: int
    label: int
    #: the label of the reconstruction paired with this image
    recovered_label: int
    #: whether the true label is among the batch's recovered labels (multiset match)
    label_recovered: bool
    psnr: float
    ssim: float
    #: the reconstruction and the original, ``(C, H, W)`` in ``[0, 1]``
    image: torch.Tensor
    original: torch.Tensor
    matching_loss: float = math.nan
    steps: int = 0
    labels_inferred: bool = False


@dataclass
class MethodAttack:
    """Everything one attack found for one method at one round."""

    method: str
    round: int
    attack: str
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


@dataclass
class Victim:
    """One attacked batch: a client's images and what it shared in one round."""

    round: int
    index: int
    client_id: int
    #: pixels ``(B, C, H, W)`` in [0, 1] and labels ``(B,)``
    pixels: torch.Tensor
    labels: torch.Tensor
    #: the victim's weights when it computes the gradient (right after its local
    #: training in that round)
    weights: dict[str, torch.Tensor]
    upload: Upload


class VictimRecorder:
    """Delivers every upload unchanged (a transport) and, after each attacked round,
    keeps that round's victims (:meth:`after_round`, the engine's round hook).
    """

    def __init__(self, sim: Any, rounds: Sequence[int], options: AttackOptions,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        self.sim = sim
        self.rounds = set(rounds)
        self.options = options
        self.mean, self.std = mean, std
        self.uploads: dict[int, Upload] = {}
        self.victims: dict[int, list[Victim]] = {}

    def __call__(self, upload: Upload) -> Upload:
        """Remember ``upload`` as its sender's upload of the running round; deliver it."""
        self.uploads[upload.client_id] = upload
        return upload

    def after_round(self, phase: str, log: Any) -> None:
        """After known round ``log.rounds_done`` (1-based): keep its victims if attacked."""
        rnd = int(log.rounds_done)
        uploads, self.uploads = self.uploads, {}
        if phase == "known" and rnd in self.rounds:
            self.victims[rnd] = self._take(rnd, uploads)

    def _take(self, rnd: int, uploads: Mapping[int, Upload]) -> list[Victim]:
        sim, options = self.sim, self.options
        uploaders = sorted(c for c in uploads if sim.engine.store.get(c) is not None)
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
            rng = numpy_rng(sim.config.seed, "attack", "images", rnd, j)
            idx = torch.from_numpy(np.sort(rng.choice(n, size=options.batch, replace=False)))
            idx = idx.to(data.y.device)
            x = data.rows(idx)
            pixels = (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)
            weights = {k: v.detach().clone() for k, v in sim.engine.store.get(cid).params.items()}
            victims.append(Victim(rnd, j, cid, pixels, data.y.index_select(0, idx), weights,
                                  uploads[cid]))
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
    dataset: str
    options: AttackOptions

    def reconstruct(self, attack: str, victim: Victim, sigma2: float) -> Reconstruction | None:
        """Run ``attack`` on what ``victim`` shared (noise of variance ``sigma2`` on it);
        ``None`` when its upload carries no parameters.
        """
        upload, options = victim.upload, self.options
        names = shared_parameter_names(self.layer_map, upload.layers)
        if not names:
            return None
        masks = {k: m for k, m in upload.masks.items() if k in names}
        observed = observed_gradients(
            self.model, victim.weights, names, self.normalise(victim.pixels), victim.labels,
            sigma2, torch_generator(self.seed, "attack", "dp", victim.round, victim.index),
        )
        set_params(self.model, attacker_params(
            victim.weights, self.random, self.layer_map, upload.layers, upload.masks
        ))
        labels = None
        if self.head_weight in observed and self.head_weight not in masks:
            labels = infer_labels(observed[self.head_weight], options.batch)
        start = torch_generator(self.seed, "attack", attack, "dummy", victim.round, victim.index)
        shape = tuple(victim.pixels.shape)
        if attack == "ig":
            return reconstruct_ig(
                self.model, observed, shape, self.num_classes, self.normalise, start, labels,
                masks, options.ig(self.dataset),
            )
        return reconstruct_idlg(
            self.model, observed, shape, self.num_classes, self.normalise, start, labels,
            masks, options.idlg,
        )

    def attack(self, method: str, attack: str, victim: Victim, sigma2: float
               ) -> list[ImageResult]:
        """One result per image of ``victim``'s batch (none if it shared no parameter)."""
        recon = self.reconstruct(attack, victim, sigma2)
        if recon is None:
            return []
        batch = victim.pixels.shape[0]
        originals = victim.pixels.detach().cpu()
        order, values = _match(recon.images, originals)
        paired = recon.images[torch.from_numpy(order)]
        similarity = ssim(paired, originals)
        found = recon.labels[torch.from_numpy(order)]
        hits = _label_hits(recon.labels, victim.labels.cpu())
        return [
            ImageResult(
                method=method, round=victim.round, attack=attack,
                index=victim.index * batch + b, client_id=victim.client_id,
                label=int(victim.labels[b]), recovered_label=int(found[b]),
                label_recovered=hits[b], psnr=float(values[b]), ssim=float(similarity[b]),
                image=paired[b], original=originals[b], matching_loss=recon.loss,
                steps=recon.steps, labels_inferred=recon.labels_inferred,
            )
            for b in range(batch)
        ]


def attack_method(
    names: Sequence[str],
    config: RunConfig,
    params: Any,
    dataset: ImageDataset,
    options: AttackOptions,
    rounds: Sequence[int],
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] = say,
    progress: bool = False,
) -> list[MethodAttack]:
    """Train one method's known phase once, keeping the victims of each of ``rounds``,
    then attack them for each variant in ``names`` (the method and/or its ``-dp``
    variant) with each of ``options.attacks``; ``progress`` shows a bar per attack.
    Results come in the order variant, round, attack.
    """
    t_start = time.perf_counter()
    sim = prepare_simulation(config, params, callbacks, dataset=dataset)
    try:
        engine = sim.engine
        mean, std = (t.to(sim.device) for t in sim.stats)
        recorder = VictimRecorder(sim, rounds, options, mean, std)
        engine.transport = recorder
        engine.callbacks.on_run_start({
            "total_rounds": config.known_rounds, "resume_round": 0, "config": {},
        })
        engine.run_phase(
            "known", sim.known_ids, max(rounds), config.clients_per_round,
            after_round=recorder.after_round,
        )
        engine.callbacks.on_run_end({})

        def normalise(t: torch.Tensor) -> torch.Tensor:
            return (t - mean) / std

        c, h, w = sim.dataset.image_shape
        random_model = build_model(
            config.model, c, sim.dataset.num_classes, h, torch_generator(config.seed, "attacker")
        )
        attacker = Attacker(
            model=engine.model, layer_map=engine.layer_map,
            random={k: v.to(sim.device) for k, v in get_params(random_model, sim.layers).items()},
            head_weight=f"{head_layer(sim.layers)}.weight", normalise=normalise,
            num_classes=sim.dataset.num_classes, seed=config.seed, dataset=config.dataset,
            options=options,
        )
        train_seconds = time.perf_counter() - t_start
        out: list[MethodAttack] = []
        for name in names:
            sigma2 = options.dp_sigma2 if name.endswith(DP_SUFFIX) else 0.0
            for rnd in rounds:
                victims = recorder.victims.get(rnd, [])
                layer_sets = [v.upload.layers for v in victims]
                shared_bytes = [
                    payload_bytes(select_layers(v.weights, engine.layer_map, v.upload.layers),
                                  v.upload.masks)
                    for v in victims
                ]
                common = sorted(set().union(*layer_sets)) if layer_sets else []
                for attack in options.attacks:
                    t0 = time.perf_counter()
                    bar = tqdm(
                        victims, desc=f"{name} round {rnd} {attack}", unit="victim",
                        disable=not progress, dynamic_ncols=True, leave=False,
                    )
                    results: list[ImageResult] = []
                    for victim in bar:
                        results += attacker.attack(name, attack, victim, sigma2)
                    note = ""
                    if not victims:
                        note = f"no client uploaded anything in round {rnd}: nothing to attack"
                    elif not results:
                        note = "the uploads carry no parameters: nothing to attack"
                    out.append(MethodAttack(
                        method=name, round=rnd, attack=attack,
                        exchanges=_exchanges(base_method(name), sigma2),
                        shared_layers=[n for n in engine.layer_map if n in common],
                        shared_bytes=float(np.mean(shared_bytes)) if shared_bytes else 0.0,
                        shared_layer_count=(
                            float(np.mean([len(x) for x in layer_sets])) if layer_sets else 0.0
                        ),
                        num_layers=len(sim.layers), results=results, note=note,
                        seconds=time.perf_counter() - t0 + (train_seconds if not out else 0.0),
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
    head = f"{result.method} round {result.round} {result.attack}"
    if not result.results:
        return f"{head}: {result.note}"
    values = [r.psnr for r in result.results]
    similarity = [r.ssim for r in result.results]
    labels = np.mean([r.label_recovered for r in result.results])
    return (
        f"{head}: PSNR mean {np.mean(values):.2f} dB (min {np.min(values):.2f}, "
        f"max {np.max(values):.2f}), SSIM mean {np.mean(similarity):.3f}, labels recovered "
        f"{100 * labels:.0f} %, {result.shared_layer_count:g}/{result.num_layers} layers "
        f"shared ({result.seconds:.0f} s)"
    )


def noise_baseline(originals: Sequence[torch.Tensor], seed: int, rnd: int = 0
                   ) -> list[tuple[float, float]]:
    """``(PSNR, SSIM)`` of uniform random images against the originals (what no attack
    achieves), one pair per original.
    """
    gen = torch_generator(seed, "attack", "noise", rnd)
    out = []
    for o in originals:
        noise = torch.rand(o.shape, generator=gen)
        out.append((float(psnr(noise, o.cpu())), float(ssim(noise, o.cpu()))))
    return out


def run_attack(
    plan: Mapping[str, tuple[RunConfig, Any]],
    methods: Sequence[str],
    dataset: ImageDataset,
    options: AttackOptions,
    rounds: Sequence[int],
    callbacks_for: Callable[[str], Sequence[Any]] = lambda method: (),
    log: Callable[[str], None] = say,
    progress: bool = False,
    on_method_done: Callable[[list[MethodAttack]], None] | None = None,
) -> list[MethodAttack]:
    """Attack every method in ``methods`` at each of ``rounds`` (``plan`` maps each base
    method to its resolved ``(config, params)``; one training run per base method); the
    attacks come back in the order method, round, attack. ``on_method_done`` receives the
    attacks finished so far after each method (to write partial results that an
    interruption cannot lose).
    """
    by_base: dict[str, list[str]] = {}
    for name in methods:
        by_base.setdefault(base_method(name), []).append(name)
    found: dict[str, list[MethodAttack]] = {}
    for base, variants in by_base.items():
        config, params = plan[base]
        for result in attack_method(
            variants, config, params, dataset, options, rounds, callbacks_for(base), log,
            progress,
        ):
            found.setdefault(result.method, []).append(result)
        if on_method_done is not None:
            on_method_done([a for name in methods for a in found.get(name, [])])
    return [a for name in methods for a in found[name]]
