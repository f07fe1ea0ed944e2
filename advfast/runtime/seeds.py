"""One way to derive the seed of a unit of work (a batch, a step, an evaluation batch) from its coordinates."""

from __future__ import annotations

SEED_MODULUS = 2**62


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2**62) from integer coordinates, e.g. ``derive_seed(seed, rank, epoch, batch)``: a
    polynomial in a large prime, so different coordinates give different seeds and the same ones the same."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % SEED_MODULUS
    return seed
