"""Seeded randomness derived from names, identical in every process, worker and run.

Python's built-in `hash` is salted per process, so anything that decides which bucket, split or
random stream a piece of data belongs to goes through these instead.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts' reprs."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def unit_interval(*parts: object) -> float:
    """A number in [0, 1) fixed by the parts: a seeded coin for assignments such as the split."""
    return stable_hash(*parts) / 2**64


def python_rng(*parts: object) -> random.Random:
    """Fast scalar draws (pairing decisions)."""
    return random.Random(stable_hash(*parts))


def numpy_rng(*parts: object) -> np.random.Generator:
    """Vector draws (masking)."""
    return np.random.Generator(np.random.PCG64(stable_hash(*parts)))
