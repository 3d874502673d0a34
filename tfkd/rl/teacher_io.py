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
temporary name first; ``checkpoint_dir/latest.json`` names the newest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator

import gymnasium as gym
import numpy as np

from tfkd.rl.envs import is_atari

TEACHER_FILE = "teacher.json"
KERAS_MODEL_FILE = "teacher.keras"
LATEST_FILE = "latest.json"
FORMAT = "tfkd.teacher/1"


class NonFiniteError(ValueError):
    """A teacher's weights or training loss went NaN or infinite (the run diverged)."""


def strict_json(value: Any) -> Any:
    """``value`` with NumPy scalars as Python ones and NaN / ±inf as None (JSON null)."""
    if isinstance(value, dict):
        return {str(key): strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path next to ``path`` (same suffix), renamed onto ``path`` on success."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, dot, suffix = name.partition(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=dot + suffix,
                                         dir=directory)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str, value: Any) -> None:
    """Writes strict JSON (no NaN / Infinity) atomically."""
    text = json.dumps(strict_json(value), indent=2, allow_nan=False)
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())


def write_npz(path: str, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)


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
        if is_atari(env_id):
            import ale_py

            gym.register_envs(ale_py)
        elif env_id.startswith("MinAtar/"):
            import minatar.gym

            minatar.gym.register_envs()
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
    write_json(os.path.join(teacher_dir, TEACHER_FILE), {"format": FORMAT, **description})


def save_keras_model(model: Any, path: str) -> None:
    """``model.save(path)`` atomically (``path`` ends in ``.keras``)."""
    with atomic_path(path) as temporary:
        model.save(temporary)


def load_keras_model(path: str) -> Any:
    """Loads a ``.keras`` file with ``safe_mode=True``; a clear ``ValueError`` if it is corrupt."""
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No Keras model file {path!r}.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive.
        raise ValueError(f"Cannot load {path!r} (corrupt or not a Keras model): {error}") from None


def replace_directory(write: Callable[[str], None], path: str) -> None:
    """Calls ``write(temporary_dir)``, then swaps that folder in for ``path``."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        write(temporary)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.replace(path, os.path.join(old, "x"))
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def save_checkpoint(checkpoint_dir: str, step: int, write: Callable[[str], None]) -> str:
    """Writes ``checkpoint_dir/ckpt-<step>`` with ``write(folder)`` and makes it the latest.

    Older ``ckpt-*`` folders are removed once the new one is complete.
    """
    name = f"ckpt-{int(step)}"
    replace_directory(write, os.path.join(checkpoint_dir, name))
    write_json(os.path.join(checkpoint_dir, LATEST_FILE), {"checkpoint": name, "step": int(step)})
    for entry in os.listdir(checkpoint_dir):
        if entry.startswith("ckpt-") and entry != name:
            shutil.rmtree(os.path.join(checkpoint_dir, entry), ignore_errors=True)
    return os.path.join(checkpoint_dir, name)


def latest_checkpoint(checkpoint_dir: str) -> str | None:
    """The newest complete ``ckpt-*`` folder in ``checkpoint_dir``, or None.

    Raises:
        ValueError: if ``latest.json`` is corrupt or names a missing folder.
    """
    path = os.path.join(checkpoint_dir, LATEST_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            folder = os.path.join(checkpoint_dir, json.load(file)["checkpoint"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"Cannot resume from {checkpoint_dir!r}: corrupt {LATEST_FILE} "
                         f"({error!r}). Delete the folder or pass another one.") from None
    if not os.path.isdir(folder):
        raise ValueError(f"Cannot resume from {checkpoint_dir!r}: {folder!r} is missing. "
                         "Delete the folder or pass another one.")
    return folder


def check_directory(path: str | None, what: str) -> None:
    """Raises ``ValueError`` unless ``path`` is None, a writable folder, or creatable."""
    if path is None:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a file, not a folder.")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(os.path.abspath(probe))
    if not os.access(probe, os.W_OK):
        raise ValueError(f"{what} {path!r} is not writable.")
