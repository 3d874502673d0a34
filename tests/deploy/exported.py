"""A tiny export folder in tfkd.deploy's layout, made from a small Keras student.

Stands in for ``tfkd export`` in the serving tests: the files ``tfkd serve``
loads (``tfkd.deploy.exporter.write_serving_files``), without the int8 model,
the TF-Agents policy and the measurements, which tests/deploy/test_export.py
checks.
"""

from __future__ import annotations

import os

import numpy as np

ENV_ID = "CartPole-v1"
OBSERVATION_SHAPE = (4,)
NUM_ACTIONS = 2


def student(seed: int):
    """A small MLP student with seeded weights (CartPole shapes)."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(OBSERVATION_SHAPE), keras.layers.Dense(16, "relu"),
                             keras.layers.Dense(NUM_ACTIONS)])


def write_export(folder: str | os.PathLike, seed: int = 0, version: int = 1,
                 saved_model: bool = True) -> str:
    """An export folder of a seeded student (``tfkd.deploy.exporter.write_serving_files``):
    a new version's files replace the old ones by atomic renames, export.json last."""
    from tfkd.deploy.exporter import write_serving_files

    return write_serving_files(student(seed), ENV_ID, folder, savedmodel=saved_model,
                               version=version)


def reference_logits(folder: str | os.PathLike, observations: np.ndarray) -> np.ndarray:
    """The TFLite artefact of ``folder`` run directly (LiteRT), no server between."""
    from tfkd.deploy import runtime

    return runtime.load(os.path.join(folder, "student.tflite")).logits(observations)
