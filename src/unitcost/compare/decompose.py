"""Exact additive attribution of a change to its factors: the Shapley value.

The change of f between two states A and B (each factor moves from its A value to its B
value) is split into one contribution per factor: its marginal effect averaged over every
order in which the factors could have moved. The contributions always add up to
f(B) - f(A) exactly (efficiency), a factor that does not move gets exactly 0, and the
result does not depend on the order the factors are listed in - unlike a chained index.
Arithmetic is on Fractions, so "exactly" means exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from math import factorial

Value = Fraction


def shapley(
    f: Callable[[Mapping[str, Value]], Value],
    before: Mapping[str, Value],
    after: Mapping[str, Value],
) -> dict[str, Value]:
    """Contribution of each factor to f(after) - f(before)."""
    moving = [k for k in before if before[k] != after[k]]
    contributions: dict[str, Value] = {k: Fraction(0) for k in before}
    n = len(moving)
    if n == 0:
        return contributions
    values: dict[int, Value] = {}
    for mask in range(1 << n):
        state = dict(before)
        for i, name in enumerate(moving):
            if mask >> i & 1:
                state[name] = after[name]
        values[mask] = f(state)
    weights = [Fraction(factorial(s) * factorial(n - s - 1), factorial(n)) for s in range(n)]
    for i, name in enumerate(moving):
        bit = 1 << i
        total = Fraction(0)
        for mask in range(1 << n):
            if mask & bit:
                continue
            total += weights[bin(mask).count("1")] * (values[mask | bit] - values[mask])
        contributions[name] = total
    return contributions


def chain(
    order: Sequence[str],
    before: Mapping[str, Value],
    after: Mapping[str, Value],
    f: Callable[[Mapping[str, Value]], Value],
) -> dict[str, Value]:
    """A chained (sequential) decomposition in a given order; also exact, but order-dependent."""
    state = dict(before)
    out = {}
    current = f(state)
    for name in order:
        state[name] = after[name]
        new = f(state)
        out[name] = new - current
        current = new
    return out
