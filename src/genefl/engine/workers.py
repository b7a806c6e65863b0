"""Worker processes that train a round's clients in parallel (``--workers N``).

A :class:`WorkerPool` starts ``N`` processes once per run. They are forked from a fork
server (``forkserver``) that has imported torch and genefl but never ran torch threads:
forking it is safe (forking a process whose OpenMP pool has run is not), and the
imported modules' memory is shared copy-on-write instead of imported once per worker.
Each worker builds the run's model, algorithm and local-training settings from the run
configuration, exactly as a Flower node does, and sees every client's data through the
data set's stored images in shared memory (:func:`share_dataset`): nothing is copied per
worker or per client, and nothing but a client's model crosses the pipe per round.

For every participant the main process sends a :class:`TrainJob` (what the client
received, its own model and extras from the main process's client store) and gets back
the :class:`~genefl.engine.client.ClientUpdate` of
:func:`~genefl.engine.client.client_update` with the client's extras. The random streams
are named by (seed, round, client), so which worker trains a client, and in which order,
does not change any number: a run is bit-identical to ``--workers 1`` with the same
threads per worker.

Faults: a worker that dies (killed, out of memory) stops the run with
:class:`WorkerCrashed`, naming the client it was training; the round in progress is
lost and the last checkpoint is left as it was, so ``genefl run --resume`` continues
from it (with any worker count). Clients are not retried: a client that crashes a
worker once (out of memory on its data) would crash the next one too. Workers ignore
Ctrl-C (the main process stops them), exit when their pipe closes, and on Linux are
killed by the kernel when the main process dies.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from genefl.data.datasets import ImageDataset
from genefl.data.federation import Federation
from genefl.errors import GeneflError
from genefl.types import ParamDict

#: environment variable that caps the cores ``auto`` counts (a sweep job sets it to its
#: share; set it yourself on a machine you share)
CORES_ENV = "GENEFL_CORES"
#: ``--workers auto`` stays at 1 below this much training work (samples through the
#: model, :func:`training_work`): starting the workers takes a few seconds, about what a
#: small CNN trains on this many samples on two cores
AUTO_MIN_WORK = 200_000
#: modules the fork server imports once for every worker
PRELOAD = ("torch", "genefl.engine.simulation", "genefl.engine.workers",
           "genefl.engine.worker_preload")
#: seconds a worker may take to start (import torch, build the model, attach the data)
START_TIMEOUT_S = 300.0


class WorkerCrashed(GeneflError):
    """A worker process died while training a client (killed, out of memory, crashed)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}; the run stopped and the round in progress is lost. Its last "
            "checkpoint is intact: continue with `genefl run --resume DIR` (any --workers; "
            "with fewer workers or --workers 1 if memory ran out)"
        )


# -- data held once ---------------------------------------------------------------------
def share_dataset(dataset: ImageDataset) -> list[torch.Tensor]:
    """Move the data set's arrays into shared memory, in place: every holder of
    ``dataset`` now sees the shared copy and the private one is freed (unless held
    elsewhere). Returns the shared tensors (``train_images, train_labels, test_images,
    test_labels``), which a worker receives at start and wraps again with
    :func:`dataset_from_shared` without a copy.
    """
    tensors = []
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        array = getattr(dataset, field)
        shared = torch.empty(array.shape, dtype=torch.from_numpy(array[:0]).dtype)
        shared.share_memory_()
        shared.numpy()[...] = array
        object.__setattr__(dataset, field, shared.numpy())  # frozen: same data, new home
        del array
        tensors.append(shared)
    return tensors


def dataset_from_shared(name: str, num_classes: int,
                        tensors: Sequence[torch.Tensor]) -> ImageDataset:
    """An :class:`ImageDataset` whose arrays are views of :func:`share_dataset`'s tensors."""
    train_x, train_y, test_x, test_y = (t.numpy() for t in tensors)
    return ImageDataset(name, train_x, train_y, test_x, test_y, num_classes)


# -- messages ---------------------------------------------------------------------------
@dataclass
class TrainJob:
    """One participant's round, as the main process hands it to a worker."""

    client_id: int
    cluster: int
    round: int
    phase: str
    instructions: Mapping[str, Any]
    #: the layers the client received this round
    received: ParamDict
    #: the client's own model from the store (``None`` before its first round)
    own: ParamDict | None
    #: the client's extras from the store (hooks may change them)
    state: dict[str, Any]


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker is started with (sent once, at start)."""

    config: Any  # RunConfig
    params: Any
    dataset_name: str
    num_classes: int
    #: the shared tensors of :func:`share_dataset`
    tensors: tuple[torch.Tensor, ...]
    federation: Federation
    #: per-channel ``(mean, std)`` of the training pixels
    stats: tuple[torch.Tensor, torch.Tensor]
    device: str
    threads: int


def _dumps(value: Any) -> bytes:
    # plain pickle: tensors travel by value, not as shared-memory handles
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


# -- the worker's side ------------------------------------------------------------------
def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``): after
    loading a data set or building a worker, freed buffers would otherwise stay in the
    process's resident memory. A no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no orphans after SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Trainer:
    """A worker's copy of the run: model, algorithm, settings and every client's data."""

    def __init__(self, setup: WorkerSetup) -> None:
        from genefl.engine.local import LocalSettings
        from genefl.engine.simulation import client_tensors, make_algorithm, model_parts

        config = setup.config
        self.seed = config.seed
        self.device = torch.device(setup.device)
        dataset = dataset_from_shared(setup.dataset_name, setup.num_classes, setup.tensors)
        self.clients = client_tensors(dataset, setup.federation, self.device, setup.stats)
        self.model, self.layers, self.initial, _ = model_parts(
            config, dataset.image_shape, dataset.num_classes, self.device
        )
        self.layer_map = {layer.name: layer for layer in self.layers}
        self.algorithm = make_algorithm(config, setup.params, self.layers)
        self.settings = LocalSettings.from_config(config)

    def train(self, job: TrainJob) -> tuple[Any, dict[str, Any]]:
        from genefl.engine.client import client_context, client_update

        data = self.clients[job.client_id]
        ctx = client_context(self.seed, job.client_id, job.cluster, job.round, job.phase,
                             job.instructions, len(data.train), job.state)
        on = self.device
        received = {k: v.to(on) for k, v in job.received.items()}
        own = {k: v.to(on) for k, v in job.own.items()} if job.own is not None else None
        result = client_update(
            self.algorithm, self.model, self.layers, self.layer_map, data.train, data.val,
            data.test, received, own, self.initial, self.settings, ctx,
        )
        return result, ctx.state


def _worker_main(setup: WorkerSetup, conn: Connection) -> None:
    """A worker's life: start, then train jobs until the pipe closes or says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _die_with_parent()
    torch.set_num_threads(setup.threads)
    try:
        trainer = _Trainer(setup)
    except BaseException as exc:  # noqa: BLE001  (reported to the main process)
        if hasattr(exc, "add_note"):
            exc.add_note(
                "A worker process sees the models and methods of importable modules and "
                "entry points, not those registered in a script's __main__; register them "
                "in a module (or a plugin), or use --workers 1."
            )
        _send_error(conn, exc)
        return
    release_free_memory()
    conn.send_bytes(_dumps(("ready", os.getpid())))
    while True:
        try:
            job = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            reply = ("done", trainer.train(job))
            release_free_memory()
        except BaseException as exc:  # noqa: BLE001
            _send_error(conn, exc)
            continue
        conn.send_bytes(_dumps(reply))


def _send_error(conn: Connection, exc: BaseException) -> None:
    text = traceback.format_exc()
    try:
        payload = _dumps(("error", exc, text))
    except Exception:  # an exception that cannot be pickled travels as its text
        payload = _dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), text))
    try:
        conn.send_bytes(payload)
    except (OSError, BrokenPipeError):
        pass


# -- the main process's side ------------------------------------------------------------
@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a worker without re-running the parent's ``__main__`` in it: ``spawn`` would
    import a user's script again, and a script without an ``if __name__ == "__main__"``
    guard would start its run a second time. Workers need only genefl and the models and
    methods registered in importable modules (entry points).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    main.__spec__ = None
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "stopped"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed; out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _doing(job: TrainJob) -> str:
    return f"training client {job.client_id} in round {job.round}"


class WorkerPool:
    """``workers`` processes, alive until :meth:`close`, that train clients."""

    def __init__(self, setup: WorkerSetup, workers: int,
                 start_timeout: float = START_TIMEOUT_S) -> None:
        import torch.multiprocessing as tmp

        # a fork server that has imported torch and genefl but never run torch threads:
        # forking from it is safe, and its imported modules are shared (copy-on-write)
        # by every worker instead of each worker importing its own copy
        if "forkserver" in tmp.get_all_start_methods():
            context = tmp.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
        else:  # Windows: every worker imports its own copy
            context = tmp.get_context("spawn")
        self.size = workers
        self.threads = setup.threads
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        try:
            for i in range(workers):
                ours, theirs = context.Pipe(duplex=True)
                proc = context.Process(target=_worker_main, args=(setup, theirs),
                                       name=f"genefl-worker-{i}", daemon=True)
                with _main_module_hidden():
                    proc.start()
                theirs.close()
                self._procs.append(proc)
                self._conns.append(ours)
            for i in range(workers):
                self._receive(i, "starting", start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    def _receive(self, i: int, doing: str, timeout: float | None = None) -> Any:
        conn, proc = self._conns[i], self._procs[i]
        ready = wait([conn, proc.sentinel], timeout)
        if not ready:
            raise WorkerCrashed(f"worker {i} (pid {proc.pid}) did not answer within "
                                f"{timeout:.0f} s while {doing}")
        if conn in ready:
            try:
                return self._unpack(i, conn.recv_bytes(), doing)
            except (EOFError, OSError):
                pass
        proc.join(5)
        raise WorkerCrashed(f"worker {i} (pid {proc.pid}) {_exit_text(proc.exitcode)} while "
                            f"{doing}")

    @staticmethod
    def _unpack(i: int, blob: bytes, doing: str) -> Any:
        message = pickle.loads(blob)
        if message[0] == "error":
            _, exc, text = message
            if hasattr(exc, "add_note"):
                exc.add_note(f"(in worker {i} while {doing}; its traceback:)\n{text}")
            raise exc
        return message[1]

    def train(self, jobs: Sequence[TrainJob]) -> list[tuple[Any, dict[str, Any]]]:
        """Train every job, each on the next free worker; results in ``jobs``' order.

        A worker that dies raises :class:`WorkerCrashed` naming its client; an error in
        a client's training is raised again here with the worker's traceback attached.
        Either way the pool is closed first.
        """
        results: list[Any] = [None] * len(jobs)
        busy: dict[int, int] = {}  # worker -> job index
        pending = list(range(len(jobs)))[::-1]
        try:
            while pending or busy:
                for i in range(self.size):
                    if pending and i not in busy:
                        j = pending.pop()
                        busy[i] = j
                        try:
                            self._conns[i].send_bytes(_dumps(jobs[j]))
                        except OSError:  # the worker is gone: say how and with what
                            self._receive(i, _doing(jobs[j]))
                watch = {self._conns[i]: i for i in busy}
                watch.update({self._procs[i].sentinel: i for i in busy})
                for ready in wait(list(watch)):
                    i = watch[ready]
                    if i not in busy:
                        continue
                    j = busy[i]
                    results[j] = self._receive(i, _doing(jobs[j]))
                    del busy[i]
        except BaseException:
            self.close()
            raise
        return results

    def close(self) -> None:
        """Stop every worker (ask, then terminate, then kill) and wait for them."""
        for conn in self._conns:
            try:
                conn.send_bytes(_dumps(None))
            except (OSError, BrokenPipeError, ValueError):
                pass
        for proc in self._procs:
            proc.join(2)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns, self.size = [], [], 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def resolve_workers(config: Any, participants: int, cores: int | None = None,
                    work: float = math.inf) -> tuple[int, int]:
    """``(workers, threads per worker)`` of a run.

    ``--workers auto`` is one per physical core (``cores``; default: the environment
    variable ``GENEFL_CORES`` if set, else :func:`~genefl.machine.physical_cores`) capped
    by the round's ``participants``; it stays 1 with ``--batched-clients`` and when the
    run's training ``work`` (samples passed through the model: rounds x participants x
    local epochs x samples per client) is under :data:`AUTO_MIN_WORK`, too little to pay
    for starting the workers. ``--threads-per-worker auto`` shares the cores among the
    workers (0 with one worker: torch's default).
    """
    from genefl.machine import physical_cores

    budget = os.environ.get(CORES_ENV, "")
    cores = cores or (int(budget) if budget.isdigit() and int(budget) > 0 else physical_cores())
    workers = config.workers
    if workers == 0:
        small = work < AUTO_MIN_WORK
        workers = 1 if config.batched_clients or small else max(1, min(cores, participants))
    threads = config.threads_per_worker
    if threads == 0:
        threads = 0 if workers == 1 else max(1, math.floor(cores / workers))
    return workers, threads


def training_work(config: Any, train_sizes: Sequence[int]) -> float:
    """Samples a run passes through its model in local training: every round's
    participants x local epochs x the clients' mean training size.
    """
    if not train_sizes:
        return 0.0
    rounds = config.known_rounds + config.agnostic_rounds
    mean = sum(train_sizes) / len(train_sizes)
    return float(rounds * config.clients_per_round * config.local_epochs * mean)


__all__ = [
    "TrainJob", "WorkerCrashed", "WorkerPool", "WorkerSetup", "dataset_from_shared",
    "release_free_memory", "resolve_workers", "share_dataset", "training_work",
]
