"""FedLPS (SPEC §7, revised): a trained, shared encoder and a pruned predictor of which
only the surviving channels travel; freezing the encoder is an option for pretrained
starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_dataset
from torch import nn

from genefl.algorithms.base import ClientContext, ClientData, Upload
from genefl.algorithms.fedlps import MASKS
from genefl.algorithms.registry import get_algorithm_class
from genefl.config import resolve
from genefl.engine.local import LocalSettings, train_local
from genefl.engine.simulation import prepare_simulation
from genefl.engine.wire import payload_bytes, select_layers
from genefl.method.cluster import data_signature
from genefl.models import build_model, get_params, list_layers
from genefl.models.layers import Layer, set_params

#: small CNN: encoder = block1..block3 (conv + norm each), predictor = the rest
ENCODER = ["block1.conv", "block1.norm", "block2.conv", "block2.norm", "block3.conv",
           "block3.norm"]
PREDICTOR = ["block4.conv", "block4.norm", "fc1", "fc2"]
#: surviving predictor entries at ratio 0.8: ceil(0.2 * 64) = 13 of block4's channels
#: (weights 13 x 32 x 9, norm weight/bias/running stats 4 x 13), ceil(0.2 * 128) = 26 fc1
#: units (26 x (576 + 1)); the head fc2 (10 x 128 + 10) is sent whole
PREDICTOR_KEPT = 13 * 32 * 9 + 13 * 4 + 26 * (576 + 1) + 1290


def _cnn(seed: int) -> tuple[nn.Module, list[Layer]]:
    model = build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(seed))
    return model, list_layers(model)


def _algorithm(layers: list[Layer], **options):
    _, params = resolve({}, {"method": "fedlps", **options})
    return get_algorithm_class("fedlps")(params, layers, 2)


def _ctx(client_id: int = 0, round: int = 0) -> ClientContext:
    return ClientContext(
        client_id=client_id, cluster=0, round=round, phase="known", instructions={},
        num_samples=10, state={}, generator=torch.Generator().manual_seed(round),
        rng=np.random.default_rng([client_id, round]),
    )


def _data(seed: int) -> ClientData:
    gen = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(40, 1, 28, 28, generator=gen), torch.arange(40) % 10)


def _train(algo, model: nn.Module, start: dict, ctx: ClientContext, seed: int) -> dict:
    """One round of local training from ``start``; returns the trained tensors."""
    layers = algo.layers
    set_params(model, start)
    objective = algo.local_objective(model, _data(seed), {}, ctx)
    train_local(model, _data(seed), LocalSettings(1, 16, 0.05, 0.9), objective,
                torch.Generator().manual_seed(seed))
    return get_params(model, layers)


def _upload(algo, after: dict, ctx: ClientContext) -> tuple[Upload, int]:
    names = algo.select_upload(after, after, ctx)
    params = select_layers(after, algo.layer_by_name, names)
    masks = algo.upload_masks(names, after, ctx)
    upload = Upload(ctx.client_id, 0, tuple(names), params, 10, masks)
    return upload, payload_bytes(params, masks)


def test_encoder_is_trained_uploaded_whole_and_averaged() -> None:
    """Default: every layer is downloaded and uploaded; encoder tensors are sent whole and
    averaged over the senders, predictor tensors carry the client's pruning mask and only
    their surviving entries are counted; the server averages each predictor entry over
    the clients that sent it and keeps the rest."""
    model, layers = _cnn(0)
    algo = _algorithm(layers)
    assert algo.encoder == ENCODER and algo.predictor == PREDICTOR
    assert algo.frozen == frozenset()
    assert algo.download_layers(0, "known") == ENCODER + PREDICTOR
    assert algo.allowed_upload_layers(0) == set(ENCODER + PREDICTOR)
    assert algo.learngene_layers(0) == algo.all_layer_names

    # two clients starting from different models: different pruning masks
    uploads, masks = [], []
    for cid, seed in ((0, 1), (1, 2)):
        initial = get_params(_cnn(seed)[0], layers)
        ctx = _ctx(client_id=cid)
        start = algo.start_params({}, None, initial, ctx)
        after = _train(algo, model, start, ctx, seed)
        for name in (n for la in layers[:6] for n in la.param_names):
            assert not torch.equal(after[name], start[name]), name  # the encoder trains
        upload, nbytes = _upload(algo, after, ctx)
        assert upload.layers == tuple(ENCODER + PREDICTOR)
        assert not set(upload.masks) & {t for la in layers[:6] for t in la.tensor_names}
        assert set(upload.masks) >= {"block4.conv.weight", "fc1.weight", "fc1.bias"}
        encoder_bytes = sum(la.nbytes for la in layers[:6])
        assert nbytes == encoder_bytes + 4 * PREDICTOR_KEPT
        uploads.append(upload)
        masks.append(ctx.state[MASKS])
    keep = [m["fc1.bias"] for m in masks]
    assert not torch.equal(keep[0], keep[1])

    current = {n: torch.full_like(t, 7.0) for n, t in get_params(model, layers).items()}
    new = algo.aggregate(0, current, uploads)
    a, b = (u.params for u in uploads)
    for layer in layers[:6]:  # encoder: the plain mean of the two clients
        for name in layer.tensor_names:
            torch.testing.assert_close(new[name], (a[name] + b[name]) / 2)
    both, only0 = keep[0] & keep[1], keep[0] & ~keep[1]
    nobody = ~keep[0] & ~keep[1]
    assert both.any() and only0.any() and nobody.any()
    torch.testing.assert_close(new["fc1.weight"][both], (a["fc1.weight"][both]
                                                         + b["fc1.weight"][both]) / 2)
    torch.testing.assert_close(new["fc1.weight"][only0], a["fc1.weight"][only0])
    assert torch.all(new["fc1.weight"][nobody] == 7.0)
    torch.testing.assert_close(new["fc2.weight"], (a["fc2.weight"] + b["fc2.weight"]) / 2)


def test_prunes_predictor_once_from_the_start_model() -> None:
    """Ratio 0.8 keeps the 13 block4 channels and 26 fc1 units of largest L1 norm on the
    model the client first starts from; the mask is kept, and pruned entries stay zero
    through training and later downloads."""
    model, layers = _cnn(1)
    algo = _algorithm(layers)
    initial = get_params(model, layers)
    ctx = _ctx()
    start = algo.start_params({}, None, initial, ctx)
    masks = ctx.state[MASKS]
    keep4 = masks["block4.conv.weight"][:, 0, 0, 0]
    assert int(keep4.sum()) == 13 and int(masks["fc1.bias"].sum()) == 26
    assert "fc2.weight" not in masks and set(masks) >= {
        "block4.norm.weight", "block4.norm.bias", "block4.norm.running_mean",
        "block4.norm.running_var",
    }
    norms = initial["block4.conv.weight"].abs().flatten(1).sum(1)
    assert set(torch.topk(norms, 13).indices.tolist()) == set(keep4.nonzero().flatten().tolist())
    assert torch.equal(start["block4.conv.weight"][keep4], initial["block4.conv.weight"][keep4])
    for round in range(2):
        assert torch.all(start["block4.conv.weight"][~keep4] == 0)
        assert torch.all(start["fc1.weight"][~masks["fc1.bias"]] == 0)
        after = _train(algo, model, start, ctx, round)
        assert torch.all(after["block4.conv.weight"][~keep4] == 0)
        assert torch.all(after["fc1.weight"][~masks["fc1.bias"]] == 0)
        cluster = {k: v + 1.0 for k, v in after.items()}  # a shifted cluster model
        start = algo.start_params(cluster, after, initial, ctx)
        assert ctx.state[MASKS] is masks  # pruned once, the mask is kept


def test_frozen_encoder_option_neither_trains_nor_sends_the_encoder() -> None:
    """``fedlps_freeze_encoder``: the reference code's behaviour for pretrained starts."""
    model, layers = _cnn(1)
    algo = _algorithm(layers, fedlps_freeze_encoder=True)
    encoder_params = {n for la in layers[:6] for n in la.param_names}
    assert algo.frozen == encoder_params
    assert algo.download_layers(0, "known") == PREDICTOR
    assert algo.allowed_upload_layers(0) == set(PREDICTOR)
    assert algo.learngene_layers(0) == algo.all_layer_names  # new clients: full model
    initial = get_params(model, layers)
    ctx = _ctx()
    start = algo.start_params({}, None, initial, ctx)
    for round in range(2):
        objective = algo.local_objective(model, _data(round), {}, ctx)
        assert objective.frozen == encoder_params
        after = _train(algo, model, start, ctx, round)
        for name in encoder_params:
            assert torch.equal(after[name], start[name]), name
        assert not torch.equal(after["fc1.weight"], start["fc1.weight"])
        upload, nbytes = _upload(algo, after, ctx)
        assert upload.layers == tuple(PREDICTOR)
        assert nbytes == 4 * PREDICTOR_KEPT
        cluster = select_layers(after, algo.layer_by_name, PREDICTOR)
        start = algo.start_params({k: v + 1.0 for k, v in cluster.items()}, after, initial,
                                  ctx)
        for name in encoder_params:  # the encoder is the client's own, never downloaded
            assert torch.equal(start[name], after[name])


#: toy data: 6 classes, known / agnostic halves of 3; each client holds 2 of its 3 classes
NUM_CLASSES = 6
TINY = dict(
    known_clients=6, agnostic_clients=6, clusters=2, known_rounds=5, agnostic_rounds=4,
    clients_per_round=3, local_epochs=5, batch_size=16, shards=2, device="cpu",
    method="fedlps",
)


def run_tiny(**options) -> tuple[list[float], list[tuple[float, list[int]]]]:
    """A tiny FedLPS run: the agnostic phase's round accuracies and, per new client, its
    final model's test accuracy and the classes it predicts."""
    config, params = resolve({}, {**TINY, **options})
    sim = prepare_simulation(config, params, dataset=make_dataset(num_classes=NUM_CLASSES))
    engine = sim.engine
    engine.run_phase("known", sim.known_ids, config.known_rounds, config.clients_per_round)
    signatures = {cid: data_signature(sim.clients[cid].pixels, config.signature_dim)
                  for cid in sim.agnostic_ids}
    log = engine.run_phase("agnostic", sim.agnostic_ids, config.agnostic_rounds,
                           config.clients_per_round, signatures=signatures)
    finals = []
    for cid in sim.agnostic_ids:
        record = engine.store.get(cid)
        if record is None:
            continue
        set_params(engine.model, record.params)
        engine.model.eval()
        test = sim.clients[cid].test
        with torch.no_grad():
            pred = engine.model(test.x).argmax(1)
        finals.append((float((pred == test.y).float().mean()), sorted(set(pred.tolist()))))
    sim.close()
    return log.accuracies, finals


@pytest.mark.parametrize("seed", [0, 1])
def test_new_clients_learn(seed: int) -> None:
    """End to end: new clients score clearly above chance (1/6) from their first round on
    (with the frozen random encoder of the old code they scored 0 %: their first round
    could not move the predictor off the known classes), end well above what one class
    per client gives (each holds 2 classes: 1/2), and do not all predict one class."""
    rounds, finals = run_tiny(seed=seed)
    assert rounds[0] > 1 / NUM_CLASSES + 0.15, rounds
    assert rounds[-1] > 0.75, rounds
    assert np.mean([acc for acc, _ in finals]) > 0.6, finals
    assert len({c for _, classes in finals for c in classes}) > 1, finals
