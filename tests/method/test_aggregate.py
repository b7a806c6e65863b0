"""Per-cluster, per-layer aggregation (SPEC §4, Eq. 10)."""

from __future__ import annotations

import pytest
import torch

from genefl.method.aggregate import average_layers


def _current() -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor([0.0, 0.0], dtype=torch.float64),
        "b": torch.tensor([9.0], dtype=torch.float64),
        "u": torch.tensor([7.0, 7.0], dtype=torch.float64),
    }


def _uploads() -> list[dict[str, torch.Tensor]]:
    """w sent by all three, b by clients 1 and 3 only, u by nobody."""
    return [
        {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])},
        {"w": torch.tensor([3.0, 4.0])},
        {"w": torch.tensor([5.0, 9.0]), "b": torch.tensor([5.0])},
    ]


def test_average_only_over_uploads_that_carry_the_tensor() -> None:
    """w = ([1,2] + [3,4] + [5,9]) / 3 = [3, 5];  b = (3 + 5) / 2 = 4 (not /3, and the
    current value 9 takes no part);  u = 7, 7 unchanged."""
    current = _current()
    out = average_layers(current, _uploads())
    assert set(out) == {"w", "b", "u"}
    assert torch.allclose(out["w"], torch.tensor([3.0, 5.0], dtype=torch.float64))
    assert torch.allclose(out["b"], torch.tensor([4.0], dtype=torch.float64))
    assert torch.equal(out["u"], torch.tensor([7.0, 7.0], dtype=torch.float64))
    assert out["w"].dtype == torch.float64  # cast to the cluster model's dtype


def test_untouched_tensor_is_a_copy_and_current_is_not_modified() -> None:
    current = _current()
    out = average_layers(current, _uploads())
    assert out["u"] is not current["u"]
    assert out["u"].data_ptr() != current["u"].data_ptr()
    out["u"].add_(1.0)
    assert torch.equal(current["u"], torch.tensor([7.0, 7.0], dtype=torch.float64))
    assert torch.equal(current["w"], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(current["b"], torch.tensor([9.0], dtype=torch.float64))


def test_sample_weights() -> None:
    """Weights 1, 2, 3: w = (1*[1,2] + 2*[3,4] + 3*[5,9]) / 6 = [22/6, 37/6];
    b = (1*3 + 3*5) / (1+3) = 4.5."""
    out = average_layers(_current(), _uploads(), weights=[1.0, 2.0, 3.0])
    assert torch.allclose(out["w"], torch.tensor([22 / 6, 37 / 6], dtype=torch.float64))
    assert torch.allclose(out["b"], torch.tensor([4.5], dtype=torch.float64))
    assert torch.equal(out["u"], torch.tensor([7.0, 7.0], dtype=torch.float64))


def test_no_uploads_keeps_everything_as_copies() -> None:
    current = _current()
    out = average_layers(current, [])
    for k, v in current.items():
        assert torch.equal(out[k], v) and out[k] is not v


def test_unknown_names_and_weight_count_raise() -> None:
    with pytest.raises(KeyError):
        average_layers(_current(), [{"nope": torch.zeros(1)}])
    with pytest.raises(ValueError):
        average_layers(_current(), _uploads(), weights=[1.0, 2.0])


def test_masked_entries_average_only_over_their_senders() -> None:
    """Client 1 sends w[0] only, client 2 sends w[1] only, client 3 sends both:
    w[0] = (1 + 5) / 2 = 3, w[1] = (4 + 9) / 2 = 6.5. For b, client 1 sends nothing
    (mask all False) and client 3 sends it whole: b = 5. Weights scale per entry."""
    masks = [
        {"w": torch.tensor([True, False]), "b": torch.tensor([False])},
        {"w": torch.tensor([False, True])},
        {},
    ]
    out = average_layers(_current(), _uploads(), masks=masks)
    assert torch.allclose(out["w"], torch.tensor([3.0, 6.5], dtype=torch.float64))
    assert torch.allclose(out["b"], torch.tensor([5.0], dtype=torch.float64))
    weighted = average_layers(_current(), _uploads(), weights=[1.0, 2.0, 3.0], masks=masks)
    # w[0] = (1*1 + 3*5) / 4 = 4, w[1] = (2*4 + 3*9) / 5 = 7
    assert torch.allclose(weighted["w"], torch.tensor([4.0, 7.0], dtype=torch.float64))


def test_entry_that_nobody_sent_keeps_its_value() -> None:
    masks = [{"w": torch.tensor([True, False])}]
    out = average_layers(_current(), [{"w": torch.tensor([2.0, 100.0])}], masks=masks)
    assert torch.equal(out["w"], torch.tensor([2.0, 0.0], dtype=torch.float64))
