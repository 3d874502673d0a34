"""A tiny export folder in tfkd.deploy's layout, made from a small Keras student.

Stands in for ``tfkd export`` in the serving tests: TFLite (float) from
``tf.lite.TFLiteConverter.from_keras_model``, a SavedModel with a
``serving_default`` signature ``observations -> {"action", "logits"}`` from
Keras' ``ExportArchive``, the ``.keras`` file and ``export.json``.
"""

from __future__ import annotations

import os

import numpy as np

from tfkd import files

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
    """Writes an export folder of a seeded student; the files of a new version replace
    the old ones by atomic renames, the artefact before export.json."""
    import keras
    import tensorflow as tf

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    model = student(seed)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with files.atomic_path(os.path.join(folder, "student.tflite")) as path:
        with open(path, "wb") as file:
            file.write(converter.convert())
    with files.atomic_path(os.path.join(folder, "student.keras")) as path:
        model.save(path)
    if saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)

        def serve(observations):
            logits = model(observations, training=False)
            return {"action": tf.argmax(logits, axis=-1), "logits": logits}

        spec = tf.TensorSpec([None, *OBSERVATION_SHAPE], tf.float32, name="observations")
        archive.add_endpoint("serving_default", serve, input_signature=[spec])
        staging = os.path.join(folder, "saved_model", f".{version}.tmp")
        archive.write_out(staging, verbose=False)
        os.replace(staging, os.path.join(folder, "saved_model", str(version)))
    files.write_json(os.path.join(folder, "export.json"), {
        "env_id": ENV_ID, "observation_shape": list(OBSERVATION_SHAPE),
        "observation_dtype": "float32", "num_actions": NUM_ACTIONS, "version": version,
        "artefacts": ["saved_model", "student.keras", "student.tflite"]})
    return folder


def reference_logits(folder: str | os.PathLike, observations: np.ndarray) -> np.ndarray:
    """The TFLite artefact of ``folder`` run directly (LiteRT), no server between."""
    from tfkd.deploy import runtime

    return runtime.load(os.path.join(folder, "student.tflite")).logits(observations)
