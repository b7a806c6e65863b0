"""Named, independent random streams derived from the run seed (no global seeding).

Every random choice asks for its own stream by a key path, e.g. ``("train", round,
client)``; the stream does not depend on the order in which other streams are used, so
a client's shuffles are the same whether it trains first or last, in-process or on
Flower.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _key(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` under the run ``seed``."""
    seq = np.random.SeedSequence(entropy=seed, spawn_key=tuple(_key(k) for k in keys))
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A NumPy generator for the stream named by ``keys``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` for the stream named by ``keys``."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, *keys))
    return gen
