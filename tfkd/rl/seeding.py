"""Seeding: one integer fixes everything random in a run.

``seed_everything`` seeds the global generators (Python, NumPy, TensorFlow,
Keras); ``rng_streams`` derives independent NumPy generators, one per purpose,
so that drawing more numbers for one purpose (say, ε-greedy actions) never
shifts the numbers drawn for another (say, reservoir sampling).

Determinism holds for the same seed on the same machine with the same thread
counts and instruction set: TensorFlow's CPU kernels may sum in another order
on another CPU or with other ``tf.config.threading`` settings.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def seed_everything(seed: int, deterministic_ops: bool = False) -> None:
    """Seeds Python's ``random``, NumPy, TensorFlow (global seed and global
    ``tf.random.Generator``) and Keras with ``seed``.

    Args:
        seed: a non-negative integer.
        deterministic_ops: also call ``tf.config.experimental.enable_op_determinism``
            (process-wide, cannot be undone; needed on GPU, where some kernels
            accumulate in a nondeterministic order; CPU kernels used by tfkd
            are deterministic without it).
    """
    seed = check_seed(seed)
    keras.utils.set_random_seed(seed)
    tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def rng_streams(seed: int, names: tuple[str, ...]) -> dict[str, np.random.Generator]:
    """Independent generators ``{name: Generator}`` derived from ``seed``.

    Stream ``k`` is ``np.random.default_rng(SeedSequence(seed).spawn(...)[k])``:
    adding a name at the end leaves the earlier streams unchanged.
    """
    children = np.random.SeedSequence(check_seed(seed)).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def derived_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed derived from ``seed`` and ``keys`` (e.g. a round index)."""
    sequence = np.random.SeedSequence([check_seed(seed), *map(int, keys)])
    return int(sequence.generate_state(1, np.uint32)[0] >> 1)


def check_seed(seed) -> int:
    """``seed`` as an int, or a ValueError naming it (negative, bool, non-integer)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)
