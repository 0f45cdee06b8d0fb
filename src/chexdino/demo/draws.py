"""Seeded draws shared by the generator: stratified choices, unique ids, DICOM UIDs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def stratified(rng: np.random.Generator, n: int, choices: Sequence, probs: Sequence[float]):
    """Choices in the given proportions, each present at least once when n allows, shuffled.

    Why: a 30-study test run must still cover every encoding variant, whatever the seed.
    """
    counts = [math.floor(p * n) for p in probs]
    if n >= len(choices):
        counts = [max(1, c) for c in counts]
    order = np.argsort(-np.asarray(probs), kind="stable")
    i = 0
    while sum(counts) < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > n:
        j = order[i % len(order)]
        if counts[j] > 1:
            counts[j] -= 1
        i += 1
    out = [c for c, k in zip(choices, counts, strict=True) for _ in range(k)]
    perm = rng.permutation(n)
    return [out[k] for k in perm]


def unique_ints(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    out: set[int] = set()
    while len(out) < n:
        out.update(int(x) for x in rng.integers(lo, hi, size=2 * (n - len(out)) + 4))
    return sorted(rng.permutation(sorted(out))[:n].tolist())


def draw_dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5, dtype=np.uint64))


def draw_uid(rng: np.random.Generator) -> str:
    """A '2.25.' UUID-derived UID drawn from the seeded rng (no clock, no host id)."""
    parts = rng.integers(0, 2**32, size=4, dtype=np.uint64)
    value = 0
    for p in parts:
        value = (value << 32) | int(p)
    return f"2.25.{value | 1 << 120}"
