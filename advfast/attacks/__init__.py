"""Adversarial attacks on advfast's fused kernels: :func:`pgd` and :func:`fgsm`, their losses, the default step
sizes, and the guard that leaves the caller's model as it was."""

from advfast.attacks.fgsm import fgsm
from advfast.attacks.losses import LOSSES, LossFn, cross_entropy, cw_margin
from advfast.attacks.model_state import MODEL_MODES, ModelMode, preserved_model_state
from advfast.attacks.pgd import pgd
from advfast.attacks.step_size import FGSM_RS_SCALE, MADRY_SCALE, pgd_alpha_scale

__all__ = [
    "FGSM_RS_SCALE",
    "LOSSES",
    "MADRY_SCALE",
    "MODEL_MODES",
    "LossFn",
    "ModelMode",
    "cross_entropy",
    "cw_margin",
    "fgsm",
    "pgd",
    "pgd_alpha_scale",
    "preserved_model_state",
]
