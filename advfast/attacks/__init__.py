"""Adversarial attacks on advfast's fused kernels: :func:`pgd` and :func:`fgsm`."""

from advfast.attacks.fgsm import fgsm
from advfast.attacks.losses import LOSSES, cross_entropy, cw_margin
from advfast.attacks.pgd import pgd

__all__ = ["LOSSES", "cross_entropy", "cw_margin", "fgsm", "pgd"]
