"""Saving DQN teachers and their checkpoints: atomic, strict JSON, finite weights.

Both DQN backends (``tfkd.rl.dqn`` in Keras 3, ``tfkd.agents`` in TF-Agents)
save a teacher into one folder layout::

    teacher_dir/
      teacher.json   format, backend, env_id, hidden_units, params, best_return,
                     selection_seeds, history (strict JSON: null, never NaN or
                     Infinity), config
      teacher.keras  the Q-network (Keras backend; loaded with safe_mode=True)
      q_network.*    the Q-network weights, a tf.train.Checkpoint (TF-Agents backend)
      policy/        the greedy policy as a SavedModel (TF-Agents backend)

Every file is written under a temporary name and renamed into place
(``os.replace``), ``teacher.json`` last, so a crash leaves the previous
teacher or the new one, never half of one. Checkpoints of a training run
live in ``checkpoint_dir/ckpt-<env step>/`` folders, made complete under a
temporary name first; ``checkpoint_dir/latest.json`` names the newest
(``tfkd.files``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

import gymnasium as gym
import keras
import numpy as np

from tfkd import files
from tfkd.rl.envs import register_env_family

TEACHER_FILE = "teacher.json"
KERAS_MODEL_FILE = "teacher.keras"
FORMAT = "tfkd.teacher/1"
# DQNConfig settings that name folders on the training machine.
LOCAL_SETTINGS = ("checkpoint_dir", "tensorboard_dir")


class NonFiniteError(ValueError):
    """A teacher's weights or training loss went NaN or infinite (the run diverged)."""


def check_finite(arrays: Iterable[Any], what: str) -> None:
    """Raises :class:`NonFiniteError` if any array holds NaN or ±inf."""
    for array in arrays:
        if not np.all(np.isfinite(np.asarray(array))):
            raise NonFiniteError(
                f"{what} holds NaN or infinite values: training diverged. Nothing was saved; "
                "lower the learning rate or set max_grad_norm.")


def check_env_id(env_id: Any, where: str) -> str:
    """Returns ``env_id`` if gymnasium knows it; raises a one-line ``ValueError`` otherwise."""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"{where}: the environment id {env_id!r} is not a string.")
    try:
        register_env_family(env_id)
        gym.spec(env_id)
    except (gym.error.Error, ImportError) as error:
        raise ValueError(
            f"{where}: unknown environment id {env_id!r} ({type(error).__name__}: {error})."
        ) from None
    return env_id


def read_teacher_description(teacher_dir: str) -> dict:
    """Reads and checks ``teacher_dir/teacher.json``.

    Raises:
        FileNotFoundError: if the folder or its ``teacher.json`` is missing.
        ValueError: if ``teacher.json`` is corrupt or names an unknown env id.
    """
    path = os.path.join(teacher_dir, TEACHER_FILE)
    if not os.path.isdir(teacher_dir):
        raise FileNotFoundError(f"No teacher folder {teacher_dir!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No tfkd DQN teacher in {teacher_dir!r}: {TEACHER_FILE} is missing "
            "(train one with `tfkd train-teacher --out DIR`).")
    try:
        with open(path, encoding="utf-8") as file:
            description = json.load(file)
        env_id = description["env_id"]
        description["hidden_units"] = [int(units) for units in description["hidden_units"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"Corrupt teacher description {path!r}: {error!r}") from None
    check_env_id(env_id, path)
    return description


def write_teacher_description(teacher_dir: str, description: dict) -> None:
    """Writes ``teacher.json``; its ``config`` leaves out the folders the
    training wrote to (``LOCAL_SETTINGS``): a teacher folder travels, and they
    are paths on the machine that trained it, not part of its recipe."""
    if "config" in description:
        description = {**description, "config": {
            key: value for key, value in description["config"].items()
            if key not in LOCAL_SETTINGS}}
    files.write_json(os.path.join(teacher_dir, TEACHER_FILE), {"format": FORMAT, **description})


def save_keras_model(model: Any, path: str) -> None:
    """``model.save(path)`` atomically (``path`` ends in ``.keras``)."""
    with files.atomic_path(path) as temporary:
        model.save(temporary)


def load_keras_model(path: str) -> Any:
    """Loads a ``.keras`` file with ``safe_mode=True`` (no arbitrary code).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt or not a Keras model (one line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No Keras model file {path!r}.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"Cannot load {path!r} (corrupt or not a Keras model): "
                         f"{message}") from None
