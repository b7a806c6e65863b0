"""One-shot clustering by data-subspace signatures (SPEC §2, §5).

A client's signature is the top-``p`` left singular vectors of its data matrix in
*feature space* (features x samples), with canonical signs, flattened to a vector of
``features * p`` numbers: its size does not depend on the client's sample count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.utils.extmath import randomized_svd

CLUSTERINGS = ("kmeans", "pacfl")
#: Above this many samples *and* features the SVD is computed by a seeded randomized SVD.
EXACT_SVD_LIMIT = 1024


def canonical_signs(basis: np.ndarray) -> np.ndarray:
    """Flip each column so its largest-magnitude entry is positive.

    Singular vectors are defined up to sign; this makes signatures comparable.
    """
    basis = np.array(basis, dtype=np.float64, copy=True)
    if basis.size == 0:
        return basis
    rows = np.argmax(np.abs(basis), axis=0)
    signs = np.sign(basis[rows, np.arange(basis.shape[1])])
    signs[signs == 0] = 1.0
    return basis * signs


def subspace_basis(samples: np.ndarray, p: int = 5) -> np.ndarray:
    """Top-``p`` left singular vectors of the ``(features, n)`` data matrix.

    Args:
        samples: ``(n, features)`` array (one flattened image per row, values in [0, 1]).
        p: number of singular vectors; a client with rank < ``p`` gets zero columns.

    Returns:
        ``(features, p)`` float64 basis with canonical signs.

    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"samples must be (n, features); got shape {x.shape}")
    n, features = x.shape
    basis = np.zeros((features, p))
    if n == 0:
        return basis
    # Left singular vectors of X^T (features x n) = right singular vectors of X.
    if min(n, features) <= EXACT_SVD_LIMIT:
        _, s, vt = np.linalg.svd(x, full_matrices=False)
    else:  # large clients: seeded randomized SVD, accurate for the top few vectors
        _, s, vt = randomized_svd(x, p, n_oversamples=20, n_iter=7, random_state=0)
    keep = min(p, int(np.sum(s > s.max() * 1e-10)) if s.size and s.max() > 0 else 0)
    basis[:, :keep] = vt[:keep].T
    return canonical_signs(basis)


def data_signature(samples: np.ndarray, p: int = 5) -> np.ndarray:
    """The flattened signature ``u_i`` (length ``features * p``) of one client's data."""
    return subspace_basis(samples, p).flatten(order="F")


def kmeans_clusters(signatures: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-Means on flattened signatures ``(N, D)``; returns ``(labels (N,), centers (k, D))``."""
    signatures = np.asarray(signatures, dtype=np.float64)
    if not 1 <= k <= signatures.shape[0]:
        raise ValueError(f"need 1 <= k <= number of clients ({signatures.shape[0]}); got k={k}")
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(signatures)
    labels = km.labels_.astype(np.int64)
    return labels, cluster_means(signatures, labels, k)


def pacfl_proximity(bases: Sequence[np.ndarray]) -> np.ndarray:
    """PACFL's proximity: smallest angle (degrees) between any pair of basis vectors.

    ``A[i, j] = min arccos(clip(U_i^T U_j, -1, 1))`` in degrees; ``(N, N)``, zero diagonal.
    """
    n = len(bases)
    prox = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            cos = np.clip(bases[i].T @ bases[j], -1.0, 1.0)
            prox[i, j] = prox[j, i] = float(np.degrees(np.arccos(cos)).min())
    return prox


def pacfl_clusters(bases: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Agglomerative clustering (average linkage) on PACFL's proximity matrix.

    Returns ``(labels (N,), centers (k, D))``, centers being mean flattened signatures.
    """
    if not 1 <= k <= len(bases):
        raise ValueError(f"need 1 <= k <= number of clients ({len(bases)}); got k={k}")
    signatures = np.stack([b.flatten(order="F") for b in bases])
    if k == 1:
        labels = np.zeros(len(bases), dtype=np.int64)
    else:
        model = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
        labels = model.fit_predict(pacfl_proximity(bases)).astype(np.int64)
    return labels, cluster_means(signatures, labels, k)


def cluster_means(signatures: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean signature ``u_k`` of each cluster ``(k, D)``; an empty cluster's row is NaN
    (it can happen when fewer than ``k`` signatures are distinct) and is never nearest.
    """
    out = np.full((k, signatures.shape[1]), np.nan)
    for c in range(k):
        members = signatures[labels == c]
        if len(members):
            out[c] = members.mean(axis=0)
    return out


def nearest_cluster(signature: np.ndarray, centers: np.ndarray) -> int:
    """Index of the center nearest in Euclidean distance (Eq. 12); ties → lowest index."""
    d = np.linalg.norm(np.asarray(centers) - np.asarray(signature)[None, :], axis=1)
    d = np.where(np.isfinite(d), d, np.inf)
    return int(np.argmin(d))


def running_mean_update(center: np.ndarray, count: int, signature: np.ndarray) -> np.ndarray:
    """``u_k <- (N_k u_k + u_i) / (N_k + 1)`` (Algorithm 2, line 11)."""
    return (count * np.asarray(center) + np.asarray(signature)) / (count + 1)
