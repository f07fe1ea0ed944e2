"""Default step sizes, as multiples of eps: one place for the conventions every attack and objective uses."""

from __future__ import annotations

MADRY_SCALE = 2.5  # PGD: alpha = 2.5 eps / steps (Madry et al.): enough to cross the ball and back
FGSM_RS_SCALE = 1.25  # FGSM from a random start: alpha = 1.25 eps (Wong et al., 2020)


def pgd_alpha_scale(steps: int) -> float:
    """PGD's default step as a multiple of eps: ``2.5 / steps``."""
    return MADRY_SCALE / steps
