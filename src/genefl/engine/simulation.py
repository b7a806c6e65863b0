"""Set up and run one in-process simulation: data, federation, clustering, both phases."""

from __future__ import annotations

import hashlib
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genefl.algorithms.base import Algorithm, ClientData
from genefl.algorithms.registry import get_algorithm_class
from genefl.callbacks.base import Callback
from genefl.config import RunConfig, resolved_dict
from genefl.data.datasets import ImageDataset, load_dataset, subsample_train
from genefl.data.federation import Federation, build_federation
from genefl.engine.local import LocalSettings
from genefl.engine.rounds import ClientTensors, Engine
from genefl.engine.server import (
    LAST_ROUNDS,  # noqa: F401  (re-exported)
    RunPlan,
    ServerState,
    Transport,
    auto_eval_every,
    cluster_signatures,
    initial_state,
    run_federation,
)
from genefl.engine.store import ClientStore, DiskClientStore
from genefl.engine.workers import (
    WorkerPool,
    WorkerSetup,
    release_free_memory,
    resolve_workers,
    share_dataset,
    training_work,
)
from genefl.errors import ConfigError
from genefl.method.cluster import subspace_basis
from genefl.models import build_model, get_params, list_layers
from genefl.models.layers import Layer, layer_table
from genefl.seeding import numpy_rng, torch_generator
from genefl.types import ParamDict

#: ``--client-store auto`` keeps clients on disk above this many clients
DISK_STORE_ABOVE = 1000


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a torch device ({exc})") from exc


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std ``(1, C, 1, 1)``, float32, of stored ``uint8``
    images ``(N, C, H, W)`` read as pixels in ``[0, 1]``: a model's input is
    ``(pixels - mean) / std``. Exact integer sums over ``chunk`` images at a time, so no
    float copy of the data set is made and the result does not depend on ``chunk``.
    """
    n, c = images.shape[0], images.shape[1]
    count = n * images.shape[2] * images.shape[3]
    total = [0] * c
    squares = [0] * c
    for start in range(0, n, chunk):
        block = images[start:start + chunk].astype(np.int64)
        sums = block.sum(axis=(0, 2, 3))
        sq = np.einsum("nchw,nchw->c", block, block)
        for ch in range(c):
            total[ch] += int(sums[ch])
            squares[ch] += int(sq[ch])
    mean = [t / count / 255.0 if count else 0.0 for t in total]
    # var = (sum x^2 - (sum x)^2 / m) / (m - 1), in exact integers before the division
    var = [(q * count - t * t) / (count * (count - 1)) / 255.0**2 if count > 1 else 0.0
           for t, q in zip(total, squares)]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    std_t = torch.tensor([v**0.5 for v in var], dtype=torch.float32).view(1, c, 1, 1)
    return mean_t, std_t.clamp_min(1e-6)


def client_tensors(
    dataset: ImageDataset, federation: Federation, device: torch.device,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[int, ClientTensors]:
    """Every client's data on ``device``: index views into the data set's stored images
    (one buffer per split, shared by all clients; copied to ``device`` once if that is
    not the CPU), normalised per batch with the training split's per-channel ``stats``
    (:func:`channel_stats`, computed here when not given).
    """
    mean, std = stats if stats is not None else channel_stats(dataset.train_images)
    mean, std = mean.to(device), std.to(device)
    train_x = torch.from_numpy(dataset.train_images).to(device)
    test_x = torch.from_numpy(dataset.test_images).to(device)
    train_y = torch.from_numpy(dataset.train_labels).to(device)
    test_y = torch.from_numpy(dataset.test_labels).to(device)

    def part(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> ClientData:
        index = torch.from_numpy(idx.astype(np.int64)).to(device)
        return ClientData(x, y.index_select(0, index), index, mean, std)

    return {
        split.client_id: ClientTensors(
            train=part(train_x, train_y, split.train),
            val=part(train_x, train_y, split.val),
            test=part(test_x, test_y, split.test),
            train_images=dataset.train_images,
            train_rows=split.train,
        )
        for split in federation.known + federation.agnostic
    }


def cluster_known_clients(
    clients: dict[int, ClientTensors], known_ids: Sequence[int], config: RunConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot clustering of the known clients' signatures: ``(labels, centers)``."""
    bases = [subspace_basis(clients[c].pixels, config.signature_dim) for c in known_ids]
    return cluster_signatures(bases, config)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def params_digest(params: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names and float32 values (to show runs share weights)."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


def validate_protocol(config: RunConfig, dataset: ImageDataset) -> None:
    """Check the protocol against the data before any work: ``s`` no larger than the data
    set's classes, and enough samples for ``N + M`` clients (a :class:`ConfigError` names
    the value and the fix).
    """
    if config.partition == "shard" and config.shards > dataset.num_classes:
        raise ConfigError(
            f"--shards {config.shards} exceeds the {dataset.num_classes} classes of "
            f"{config.dataset}; choose --shards <= {dataset.num_classes // 2} (each half's "
            "classes; a larger s within the data set uses all of a half's classes, SPEC §1)"
        )
    sub = subsample_train(dataset, config.train_fraction, numpy_rng(config.seed, "subsample"))
    build_federation(
        sub, config.known_clients, config.agnostic_clients, config.partition, config.shards,
        config.beta, config.val_fraction, numpy_rng(config.seed, "federation"),
    )


def model_parts(
    config: RunConfig, image_shape: tuple[int, int, int], num_classes: int,
    device: torch.device,
) -> tuple[torch.nn.Module, list[Layer], ParamDict, Callable[[int], ParamDict]]:
    """The run's model on ``device``, its layers, the shared initial weights, and a new
    client's fresh random weights by client id (every driver builds them the same way).
    """
    c, h, _ = image_shape
    model = build_model(
        config.model, c, num_classes, h, torch_generator(config.seed, "init")
    ).to(device)
    layers = list_layers(model)
    initial = get_params(model, layers)

    def fresh(client_id: int) -> dict[str, torch.Tensor]:
        gen = torch_generator(config.seed, "fresh", client_id)
        m = build_model(config.model, c, num_classes, h, gen)
        return {k: v.to(device) for k, v in get_params(m, layers).items()}

    return model, layers, initial, fresh


def resolve_eval_every(
    config: RunConfig, train_sizes: Sequence[int], test_sizes: Sequence[int]
) -> int:
    """``config.eval_every``, or for 0 (auto) :func:`~genefl.engine.server.auto_eval_every`
    of the known clients' training and test sizes (``train_sizes``, ``test_sizes``).
    """
    if config.eval_every > 0:
        return config.eval_every
    if not train_sizes:
        return 1
    per_round = config.clients_per_round * sum(train_sizes) / len(train_sizes)
    return auto_eval_every(sum(test_sizes), per_round, config.local_epochs)


def make_algorithm(config: RunConfig, params: Any, layers: Sequence[Layer]) -> Algorithm:
    """The configured method's algorithm object."""
    algorithm = get_algorithm_class(config.method)(params, layers, config.clusters)
    algorithm.aggregate_weighting = config.aggregate_weighting
    return algorithm


@dataclass
class Simulation:
    """Everything one in-process run is made of, ready for :meth:`Engine.run_phase`."""

    config: RunConfig
    device: torch.device
    #: the data set after ``train_fraction`` subsampling
    dataset: ImageDataset
    federation: Federation
    layers: list[Layer]
    #: the shared initial weights of every cluster model
    initial: ParamDict
    algorithm: Algorithm
    clients: dict[int, ClientTensors]
    known_ids: list[int]
    agnostic_ids: list[int]
    #: cluster of each known client, in ``known_ids`` order
    labels: np.ndarray
    server: ServerState
    engine: Engine
    signature_bytes_known: int
    #: per-channel ``(mean, std)`` of the training pixels (:func:`channel_stats`)
    stats: tuple[torch.Tensor, torch.Tensor]
    #: temporary folder of a disk store without a checkpoint (removed by :meth:`close`)
    store_dir: tempfile.TemporaryDirectory | None = None
    #: the worker processes (``--workers`` > 1), stopped by :meth:`close`
    pool: WorkerPool | None = None
    #: ``(workers, threads per worker)`` as resolved (0 threads: torch's default)
    workers: tuple[int, int] = (1, 0)
    #: torch's thread count before the run (restored by :meth:`close`)
    previous_threads: int | None = None

    def close(self) -> None:
        """Stop the workers, remove temporary files, restore torch's thread count."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.store_dir is not None:
            self.store_dir.cleanup()
            self.store_dir = None
        if self.previous_threads is not None:
            torch.set_num_threads(self.previous_threads)
            self.previous_threads = None


def prepare_simulation(
    config: RunConfig,
    params: Any,
    callbacks: Sequence[Callback] = (),
    dataset: ImageDataset | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    transport: Transport | None = None,
) -> Simulation:
    """Data, federation, one-shot clustering, initial weights, algorithm and engine of one
    run (the same for every method under a given seed); nothing is trained yet.
    """
    device = resolve_device(config.device)
    if dataset is None:
        dataset = load_dataset(
            config.dataset, config.data_dir, config.image_size, config.cache_dir
        )
    dataset = subsample_train(dataset, config.train_fraction, numpy_rng(config.seed, "subsample"))
    federation = build_federation(
        dataset, config.known_clients, config.agnostic_clients, config.partition,
        config.shards, config.beta, config.val_fraction, numpy_rng(config.seed, "federation"),
    )
    model, layers, initial, fresh = model_parts(
        config, dataset.image_shape, dataset.num_classes, device
    )
    algorithm = make_algorithm(config, params, layers)
    sizes = [s.train.size for s in federation.known + federation.agnostic]
    workers, threads = resolve_workers(config, config.clients_per_round,
                                       work=training_work(config, sizes))
    tensors: list[torch.Tensor] = []
    if workers > 1:
        tensors = share_dataset(dataset)  # held once, for every worker
        release_free_memory()
    stats = channel_stats(dataset.train_images)
    clients = client_tensors(dataset, federation, device, stats)
    known_ids = [s.client_id for s in federation.known]
    agnostic_ids = [s.client_id for s in federation.agnostic]
    labels, centers = cluster_known_clients(clients, known_ids, config)
    server = initial_state(known_ids, labels, centers, initial, config.clusters)
    features = int(np.prod(dataset.image_shape))
    signature_bytes_known = 4 * config.signature_dim * features * len(known_ids)
    settings = LocalSettings.from_config(config)
    store_dir: tempfile.TemporaryDirectory | None = None
    store: ClientStore = ClientStore()
    total_clients = config.known_clients + config.agnostic_clients
    if config.client_store == "disk" or (
        config.client_store == "auto" and total_clients > DISK_STORE_ABOVE
    ):
        if checkpoint is not None:
            folder = Path(checkpoint).parent / "clients"
            if not resume and folder.exists():
                shutil.rmtree(folder)  # a previous run's client files (--overwrite)
        else:
            store_dir = tempfile.TemporaryDirectory(prefix="genefl-clients-")
            folder = Path(store_dir.name)
        store = DiskClientStore(folder, device, cache_size=2 * config.clients_per_round)
    engine = Engine(
        algorithm, model, layers, clients, server, initial, settings, config.seed,
        callbacks, fresh_model=fresh, dropout_rate=config.dropout_rate,
        max_update_ratio=config.max_update_ratio, transport=transport, store=store,
        batched=config.batched_clients, signature_dim=config.signature_dim,
    )
    sim = Simulation(
        config=config, device=device, dataset=dataset, federation=federation,
        layers=layers, initial=initial, algorithm=algorithm, clients=clients,
        known_ids=known_ids, agnostic_ids=agnostic_ids, labels=labels, server=server,
        engine=engine, signature_bytes_known=signature_bytes_known, stats=stats,
        store_dir=store_dir,
        workers=(workers, threads),
    )
    if threads > 0:  # this process's own work (evaluation) too: same numbers for any N
        sim.previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    if workers > 1:
        setup = WorkerSetup(
            config, params, dataset.name, dataset.num_classes, tuple(tensors), federation,
            stats, str(device), threads,
        )
        try:
            sim.pool = engine.pool = WorkerPool(setup, workers)
        except BaseException:
            sim.close()
            raise
    return sim


def run_simulation(
    config: RunConfig,
    params: Any,
    callbacks: Sequence[Callback] = (),
    dataset: ImageDataset | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    transport: Transport | None = None,
) -> dict[str, Any]:
    """Run the known phase then the agnostic phase in-process; return the results dict
    (keys: :func:`~genefl.engine.server.run_federation`).

    ``checkpoint`` and ``resume`` as in :func:`~genefl.engine.server.run_federation`;
    ``transport`` replaces the channel that carries uploads to the server
    (fault-injection experiments).
    """
    t0 = time.perf_counter()
    sim = prepare_simulation(config, params, callbacks, dataset, checkpoint, resume, transport)
    federation, engine = sim.federation, sim.engine
    algo_cls = type(sim.algorithm)
    resolved = resolved_dict(config, params)
    info = {
        "config": resolved_dict(config, params),
        "device": str(sim.device),
        "layers": [layer.name for layer in sim.layers],
        "layer_table": layer_table(sim.layers),  # kinds and sizes (``genefl learngene``)
        "model_bytes": engine.model_bytes,
        "initial_weights_sha256": params_digest(sim.initial),
        "known_classes": list(federation.known_classes),
        "agnostic_classes": list(federation.agnostic_classes),
        "cluster_sizes": list(sim.server.counts),
        "notes": list(federation.notes),
        "total_rounds": config.known_rounds + config.agnostic_rounds,
        "workers": sim.workers[0],
        "threads_per_worker": sim.workers[1] or torch.get_num_threads(),
    }
    plan = RunPlan(
        config=config, resolved=resolved, known_pool=sim.known_ids,
        agnostic_pool=sim.agnostic_ids, known_ids=sim.known_ids, info=info,
        signature_bytes_known=sim.signature_bytes_known,
        cluster_sizes=[int((sim.labels == k).sum()) for k in range(config.clusters)],
        notes=list(federation.notes), device=str(sim.device), exchanges=algo_cls.exchanges,
        initialises=algo_cls.initialises, checkpoint=checkpoint, resume=resume,
        torch_device=next(iter(sim.initial.values())).device,
        eval_every=resolve_eval_every(
            config, [int(sim.clients[c].train.y.shape[0]) for c in sim.known_ids],
            [int(sim.clients[c].test.y.shape[0]) for c in sim.known_ids],
        ),
    )
    try:
        return run_federation(engine.fed, engine, plan, t0)
    finally:
        sim.close()
