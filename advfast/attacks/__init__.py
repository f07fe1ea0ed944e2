"""Adversarial attacks on advfast's fused kernels: :func:`pgd` and :func:`fgsm`, APGD (:func:`apgd`,
:func:`apgd_targeted`), the gradient-free :func:`square`, their losses, the default step sizes, and the guard that
leaves the caller's model as it was."""

from advfast.attacks.apgd import apgd, apgd_targeted
from advfast.attacks.fgsm import fgsm
from advfast.attacks.losses import LOSSES, LossFn, cross_entropy, cw_margin
from advfast.attacks.model_state import MODEL_MODES, ModelMode, preserved_model_state
from advfast.attacks.pgd import pgd
from advfast.attacks.square import square
from advfast.attacks.step_size import FGSM_RS_SCALE, MADRY_SCALE, pgd_alpha_scale

__all__ = [
    "FGSM_RS_SCALE",
    "LOSSES",
    "MADRY_SCALE",
    "MODEL_MODES",
    "LossFn",
    "ModelMode",
    "apgd",
    "apgd_targeted",
    "cross_entropy",
    "cw_margin",
    "fgsm",
    "pgd",
    "pgd_alpha_scale",
    "preserved_model_state",
    "square",
]
