"""The attack's options (declared with genefl.options) and its image metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genefl.errors import ConfigError
from genefl.options import build
from genefl.privacy.metrics import psnr, recognisable_share, ssim
from genefl.privacy.options import (
    DEFAULT_ATTACK_METHODS,
    TV_BY_DATASET,
    AttackOptions,
    parse_attack_methods,
    resolve_rounds,
)


def test_rounds_resolve_against_the_known_rounds() -> None:
    assert resolve_rounds("1,10,last", 30) == [1, 10, 30]
    assert resolve_rounds("last, 1, middle, 1", 30) == [1, 15, 30]
    assert resolve_rounds("middle", 5) == [3]
    with pytest.raises(ConfigError, match="beyond --known-rounds"):
        resolve_rounds("1,31", 30)
    for bad in ("0", "first", "1,,2", "-3", "1.5"):
        with pytest.raises(ConfigError, match="--attack-rounds must be"):
            AttackOptions(attack_rounds=bad)


def test_options_are_validated_like_every_option() -> None:
    options = build(AttackOptions, {"images": "3", "ig_tv": "none", "attack": "ig"}, "test")
    assert options.images == 3 and options.ig_tv is None and options.attacks == ("ig",)
    assert AttackOptions().attacks == ("idlg", "ig")
    for key, value, needle in [
        ("images", 0, "--images must be >= 1"),
        ("dp_sigma2", 0.0, "--dp-sigma2 must be > 0"),
        ("ig_lr", math.nan, "--ig-lr must be > 0 and finite"),
        ("attack", "dlg", "--attack must be one of idlg, ig, both"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            AttackOptions(**{key: value})
    with pytest.raises(ConfigError, match="--idlg-iterations must be int"):
        build(AttackOptions, {"idlg_iterations": "2.5"}, "test")
    # the TV weight: the data set's default unless given
    assert AttackOptions().ig("digits").tv == TV_BY_DATASET["digits"]
    assert AttackOptions(ig_tv=0.5).ig("digits").tv == 0.5


def test_method_names() -> None:
    assert parse_attack_methods("all") == list(DEFAULT_ATTACK_METHODS)
    assert parse_attack_methods("genefl-dp, fedlg,genefl-dp") == ["genefl-dp", "fedlg"]
    every = parse_attack_methods("every")
    assert {"fedavg", "genefl", "fedbn", "local", "fedavg-dp"} <= set(every)
    with pytest.raises(ConfigError, match="--methods must be"):
        AttackOptions(methods="fedavg,nope")


def test_psnr_matches_a_hand_computation() -> None:
    original = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])
    reconstructed = torch.tensor([[[0.1, 0.9], [0.5, 0.75]]])
    mse = (0.01 + 0.01 + 0.0 + 0.25) / 4
    assert float(psnr(reconstructed, original)) == pytest.approx(10 * math.log10(1 / mse))


def test_ssim_is_scikit_images_per_image() -> None:
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 9, 9, generator=gen)
    b = (a + 0.1 * torch.randn(2, 3, 9, 9, generator=gen)).clamp(0, 1)
    values = ssim(b, a)
    assert values.shape == (2,)
    for i in range(2):
        expected = structural_similarity(
            b[i].double().numpy(), a[i].double().numpy(), data_range=1.0, channel_axis=0
        )
        assert float(values[i]) == pytest.approx(expected, rel=1e-9)
    assert float(ssim(a[0], a[0])) == pytest.approx(1.0)
    # an 8 x 8 image takes the 7 x 7 window; 5 x 5 takes 5 x 5
    assert ssim(a[:, :1, :5, :5], b[:, :1, :5, :5]).shape == (2,)
    with pytest.raises(ValueError, match="at least 3 x 3"):
        ssim(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_recognisable_share_counts_images_above_the_threshold() -> None:
    assert recognisable_share([10.0, 15.0, 15.1, 40.0], 15.0) == 0.5
    assert recognisable_share([float("inf")], 15.0) == 1.0
    assert np.isnan(recognisable_share([], 15.0))
