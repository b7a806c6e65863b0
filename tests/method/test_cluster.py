"""One-shot clustering by data-subspace signatures (SPEC §2, §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genefl.method.cluster import (
    canonical_signs,
    cluster_means,
    data_signature,
    kmeans_clusters,
    nearest_cluster,
    pacfl_clusters,
    pacfl_proximity,
    running_mean_update,
    subspace_basis,
)


def test_canonical_signs_hand_example() -> None:
    """Column 0: largest |.| is -2 -> flip; column 1: largest is -3 -> flip;
    column 2: largest is 4 -> keep; column 3 is zero -> stays zero."""
    basis = np.array([[1.0, -3.0, 4.0, 0.0], [-2.0, 1.0, -1.0, 0.0], [0.5, 2.0, 0.0, 0.0]])
    original = basis.copy()
    out = canonical_signs(basis)
    expected = np.array(
        [[-1.0, 3.0, 4.0, 0.0], [2.0, -1.0, -1.0, 0.0], [-0.5, -2.0, 0.0, 0.0]]
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(basis, original)  # input untouched
    for j in range(out.shape[1]):
        col = out[:, j]
        assert col[np.argmax(np.abs(col))] >= 0


def _random_samples(n: int = 12, features: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, features))


def test_subspace_basis_matches_numpy_svd_up_to_sign() -> None:
    x = _random_samples()
    basis = subspace_basis(x, p=3)
    assert basis.shape == (6, 3) and basis.dtype == np.float64
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    for j in range(3):
        ref = vt[j]
        # same vector up to sign
        sign = 1.0 if ref @ basis[:, j] > 0 else -1.0
        np.testing.assert_allclose(basis[:, j], sign * ref, atol=1e-10)
        # and the sign is the canonical one
        assert basis[np.argmax(np.abs(basis[:, j])), j] > 0
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-10)


def test_subspace_basis_invariant_to_sample_flips_and_order() -> None:
    x = _random_samples(n=10, features=5, seed=3)
    rng = np.random.default_rng(4)
    flipped = x[rng.permutation(10)] * rng.choice([-1.0, 1.0], size=(10, 1))
    np.testing.assert_allclose(subspace_basis(x, 3), subspace_basis(flipped, 3), atol=1e-10)


def test_subspace_basis_low_rank_and_empty() -> None:
    """Rank-2 data with p = 4: the last two columns are zero; no samples: all zero."""
    rng = np.random.default_rng(5)
    x = rng.random((8, 2)) @ rng.random((2, 6))
    basis = subspace_basis(x, p=4)
    assert basis.shape == (6, 4)
    np.testing.assert_allclose(basis[:, :2].T @ basis[:, :2], np.eye(2), atol=1e-10)
    np.testing.assert_array_equal(basis[:, 2:], 0.0)
    np.testing.assert_array_equal(subspace_basis(np.zeros((0, 6)), p=3), np.zeros((6, 3)))
    with pytest.raises(ValueError):
        subspace_basis(np.zeros((2, 3, 4)), p=1)


def test_data_signature_is_column_major_flattening() -> None:
    x = _random_samples()
    basis = subspace_basis(x, 2)
    sig = data_signature(x, 2)
    assert sig.shape == (12,)
    np.testing.assert_array_equal(sig[:6], basis[:, 0])
    np.testing.assert_array_equal(sig[6:], basis[:, 1])


def _two_subspace_clients(seed: int = 0) -> list[np.ndarray]:
    """Clients 0-2 vary mostly along features 0 and 1, clients 3-5 along 5 and 6."""
    rng = np.random.default_rng(seed)
    clients = []
    for c in range(6):
        axes = (0, 1) if c < 3 else (5, 6)
        n = 20 + c
        x = 0.01 * rng.standard_normal((n, 8))
        x[:, axes[0]] += 10.0 * rng.standard_normal(n)
        x[:, axes[1]] += 3.0 * rng.standard_normal(n)
        clients.append(x)
    return clients


def _assert_two_groups(labels: np.ndarray) -> None:
    assert labels.shape == (6,)
    assert len(set(labels[:3].tolist())) == 1
    assert len(set(labels[3:].tolist())) == 1
    assert labels[0] != labels[3]


def test_kmeans_separates_two_subspaces() -> None:
    clients = _two_subspace_clients()
    sigs = np.stack([data_signature(x, p=2) for x in clients])
    labels, centers = kmeans_clusters(sigs, k=2, seed=0)
    _assert_two_groups(labels)
    assert centers.shape == (2, 16)
    for c in range(2):
        np.testing.assert_allclose(centers[c], sigs[labels == c].mean(axis=0))
    with pytest.raises(ValueError):
        kmeans_clusters(sigs, k=7, seed=0)
    with pytest.raises(ValueError):
        kmeans_clusters(sigs, k=0, seed=0)


def test_pacfl_separates_two_subspaces() -> None:
    clients = _two_subspace_clients(seed=1)
    bases = [subspace_basis(x, p=2) for x in clients]
    labels, centers = pacfl_clusters(bases, k=2)
    _assert_two_groups(labels)
    sigs = np.stack([b.flatten(order="F") for b in bases])
    for c in range(2):
        np.testing.assert_allclose(centers[c], sigs[labels == c].mean(axis=0))
    one_labels, one_centers = pacfl_clusters(bases, k=1)
    np.testing.assert_array_equal(one_labels, np.zeros(6))
    np.testing.assert_allclose(one_centers[0], sigs.mean(axis=0))
    with pytest.raises(ValueError):
        pacfl_clusters(bases, k=7)


def test_pacfl_proximity_hand_angles() -> None:
    """Unit vectors in the plane at 0, 60 and 90 degrees (p = 1)."""
    def unit(deg: float) -> np.ndarray:
        r = math.radians(deg)
        return np.array([[math.cos(r)], [math.sin(r)]])

    prox = pacfl_proximity([unit(0), unit(60), unit(90)])
    expected = np.array([[0.0, 60.0, 90.0], [60.0, 0.0, 30.0], [90.0, 30.0, 0.0]])
    np.testing.assert_allclose(prox, expected, atol=1e-6)
    # obtuse angles are kept as they are (arccos of the signed cosine): 0 vs 150 -> 150
    np.testing.assert_allclose(pacfl_proximity([unit(0), unit(150)])[0, 1], 150.0, atol=1e-6)
    # p = 2: the min over all 4 pairs of columns.  U1 = [0deg, 90deg], U2 = [100deg, 170deg]:
    # angles 100, 170, 10, 80 -> 10
    u1 = np.hstack([unit(0), unit(90)])
    u2 = np.hstack([unit(100), unit(170)])
    np.testing.assert_allclose(pacfl_proximity([u1, u2])[1, 0], 10.0, atol=1e-6)


def test_pacfl_proximity_equals_loop_of_min_angles() -> None:
    rng = np.random.default_rng(7)
    bases = [subspace_basis(rng.random((9, 5)), p=3) for _ in range(4)]
    prox = pacfl_proximity(bases)
    for i in range(4):
        assert prox[i, i] == 0.0
        for j in range(4):
            if i == j:
                continue
            best = math.inf
            for a in range(3):
                for b in range(3):
                    dot = float(sum(bases[i][f, a] * bases[j][f, b] for f in range(5)))
                    dot = min(1.0, max(-1.0, dot))
                    best = min(best, math.degrees(math.acos(dot)))
            assert prox[i, j] == pytest.approx(best, abs=1e-9)


def test_nearest_cluster_euclidean_and_ties() -> None:
    centers = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # distances from (2.9, 0.5): 2.94, 0.51, 4.43 -> 1
    assert nearest_cluster(np.array([2.9, 0.5]), centers) == 1
    # (0.5, 3.0): 3.04, 3.91, 1.12 -> 2
    assert nearest_cluster(np.array([0.5, 3.0]), centers) == 2
    # (1.5, 0): tie between 0 and 1 (1.5 each) -> lowest index 0
    assert nearest_cluster(np.array([1.5, 0.0]), centers) == 0
    # (0, 0) vs centers far, (1,0), (0,1): tie between 1 and 2 -> 1
    tie_centers = np.array([[10.0, 10.0], [1.0, 0.0], [0.0, 1.0]])
    assert nearest_cluster(np.array([0.0, 0.0]), tie_centers) == 1
    # Euclidean, not L1: from (0,0), center (3,3) has L1 6 / L2 4.24, center (5,0)
    # has L1 5 / L2 5 -> Euclidean picks 0 (L1 would pick 1)
    assert nearest_cluster(np.array([0.0, 0.0]), np.array([[3.0, 3.0], [5.0, 0.0]])) == 0


def test_running_mean_update_hand_and_repeated() -> None:
    """(3 * [1, 2] + [5, -2]) / 4 = [2, 1]."""
    np.testing.assert_allclose(
        running_mean_update(np.array([1.0, 2.0]), 3, np.array([5.0, -2.0])), [2.0, 1.0]
    )
    np.testing.assert_allclose(
        running_mean_update(np.array([9.0, 9.0]), 0, np.array([5.0, -2.0])), [5.0, -2.0]
    )
    rng = np.random.default_rng(11)
    sigs = rng.standard_normal((7, 4))
    center, count = sigs[0], 1
    for s in sigs[1:]:
        center = running_mean_update(center, count, s)
        count += 1
    np.testing.assert_allclose(center, sigs.mean(axis=0), atol=1e-12)


def test_cluster_means_hand() -> None:
    sigs = np.array([[0.0, 0.0], [2.0, 4.0], [10.0, 10.0]])
    np.testing.assert_allclose(
        cluster_means(sigs, np.array([0, 0, 1]), 2), [[1.0, 2.0], [10.0, 10.0]]
    )


@pytest.mark.filterwarnings("ignore")
def test_duplicate_signatures_do_not_send_new_clients_to_an_empty_cluster() -> None:
    """Four identical signatures, k = 2: K-Means finds one distinct cluster.  A new
    client with that very signature (distance 0 to the populated cluster) must be
    matched to the populated cluster."""
    sigs = np.ones((4, 3))
    labels, centers = kmeans_clusters(sigs, k=2, seed=0)
    populated = int(labels[0])
    assert nearest_cluster(np.ones(3), centers) == populated
