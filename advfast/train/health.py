"""Symptoms of a training run that learned nothing, or lost what it learned, read off its per-epoch metrics.

A run can end "successfully" at chance accuracy (adversarial training at the full radius from the first step
often collapses to a constant predictor); these checks make sure it does not end silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CHANCE_LOSS_FRACTION = 0.9  # a training loss above 90% of ln(C): still about as uncertain as a uniform guess
CHANCE_ACCURACY_MARGIN = 0.1  # validation accuracy within 10 points of 1/C: near chance
COLLAPSE_DROP = 0.2  # validation accuracy 20 points below its best: collapsed
# Validation accuracy at least half-way from chance to 100%: the model learned, and a training loss near ln(C)
# is that of the perturbed inputs an adversarial objective trains on (FreeLB at its radius, say).
LEARNED_FRACTION = 0.5

ADVICE = "ramp eps up over more of training (--eps-warmup), lower --lr, or train for more epochs"


def diagnose(metrics: Sequence[dict[str, Any]], num_classes: int, advice: str = ADVICE) -> list[str]:
    """Warnings (empty when healthy) about the run whose epoch records are ``metrics``:

    - the final training loss is at chance: ``loss >= 0.9 ln C`` (a uniform prediction scores ``ln C``),
      unless the final clean validation accuracy shows the model learned: ``acc >= 1/C + 0.5 (1 - 1/C)``;
    - the final clean validation accuracy is near chance: ``acc <= 1/C + 0.1``;
    - the clean validation accuracy collapsed: the final one is 0.2 or more below the best epoch's.

    ``advice`` ends each warning (what to change; the default is the image trainer's).
    """
    if not metrics or num_classes < 2:
        return []
    found = []
    last = metrics[-1]
    chance_loss = math.log(num_classes)
    chance = 1.0 / num_classes
    loss = last.get("train_loss")
    final_acc = last.get("val_clean_acc")
    learned = isinstance(final_acc, int | float) and final_acc >= chance + LEARNED_FRACTION * (1 - chance)
    if isinstance(loss, int | float) and loss >= CHANCE_LOSS_FRACTION * chance_loss and not learned:
        found.append(
            f"the training loss ended at {loss:.3f}, about that of a uniform guess (ln {num_classes} = "
            f"{chance_loss:.3f}): the model barely learned; {advice}"
        )
    accuracies = [m.get("val_clean_acc") for m in metrics]
    accuracies = [a for a in accuracies if isinstance(a, int | float)]
    if accuracies:
        final, best = accuracies[-1], max(accuracies)
        if final <= chance + CHANCE_ACCURACY_MARGIN:
            found.append(
                f"validation accuracy ended at {final:.1%}, near chance ({chance:.1%} for {num_classes} classes); "
                f"{advice}"
            )
        elif final <= best - COLLAPSE_DROP:
            epoch = 1 + accuracies.index(best)
            guard = ", or keep the best epoch's weights with --overfit-guard" if advice == ADVICE else ""
            found.append(
                f"validation accuracy collapsed from {best:.1%} (epoch {epoch}) to {final:.1%}; {advice}{guard}"
            )
    return found
