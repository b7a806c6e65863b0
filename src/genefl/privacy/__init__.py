"""Privacy evaluation (SPEC §8): gradient inversion (iDLG and Inverting Gradients)
against what each method shares, scored by PSNR, SSIM and the recognisable share.
"""

from genefl.privacy.gradients import (
    Reconstruction,
    cross_entropy,
    infer_labels,
    parameter_gradients,
)
from genefl.privacy.idlg import IDLGSettings, matching_loss, reconstruct_idlg
from genefl.privacy.ig import IGSettings, cosine_loss, reconstruct_ig, total_variation
from genefl.privacy.metrics import psnr, recognisable_share, ssim
from genefl.privacy.observe import attacker_params, observed_gradients, shared_parameter_names

__all__ = [
    "IDLGSettings",
    "IGSettings",
    "Reconstruction",
    "attacker_params",
    "cosine_loss",
    "cross_entropy",
    "infer_labels",
    "matching_loss",
    "observed_gradients",
    "parameter_gradients",
    "psnr",
    "reconstruct_idlg",
    "reconstruct_ig",
    "recognisable_share",
    "shared_parameter_names",
    "ssim",
    "total_variation",
]
