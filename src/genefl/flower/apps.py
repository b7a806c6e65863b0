"""What the genefl Flower apps share: Flower's import guard and array records.

Flower itself is imported only when an app is built, so genefl works without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

INSTALL_HINT = (
    "Flower is not installed: pip install 'genefl[flower]' (from a checkout: "
    "pip install -e '.[flower]')"
)


def require_flwr() -> None:
    """Raise ``ImportError`` naming the install command when Flower is missing."""
    try:
        import flwr  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def arrays(record: Any) -> dict[str, np.ndarray]:
    """An ``ArrayRecord``'s arrays as NumPy arrays, by name."""
    return {k: v.numpy() for k, v in record.items()}


def array_record(values: Mapping[str, np.ndarray]) -> Any:
    """NumPy arrays as an ``ArrayRecord`` (names kept)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})
