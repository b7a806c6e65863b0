"""Privacy evaluation (SPEC §8): iDLG gradient inversion against what each method shares."""

from genefl.privacy.idlg import (
    AttackSettings,
    Reconstruction,
    infer_labels,
    invert_gradients,
    psnr,
)
from genefl.privacy.observe import attacker_params, observed_gradients, shared_parameter_names

__all__ = [
    "AttackSettings",
    "Reconstruction",
    "attacker_params",
    "infer_labels",
    "invert_gradients",
    "observed_gradients",
    "psnr",
    "shared_parameter_names",
]
