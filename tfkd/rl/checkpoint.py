"""Round checkpoints of a distillation run: written atomically, refused if foreign.

Layout of a checkpoint directory::

    DIR/latest.json          {"round": k, "folder": "round-00000k"}; replaced atomically
    DIR/round-00000k/        one finished round, written in full before latest.json names it
        state.json           round index, history, RNG states, fingerprint and config
        student.npz          student weights (arr_0, arr_1, ...)
        optimizer.npz        optimizer variables
        best.npz             the best round's student weights (keep_best only)
        buffer.npz           the aggregated buffer's observations and teacher outputs

Everything is plain JSON or ``.npz`` read with ``allow_pickle=False``. A kill
at any moment leaves ``latest.json`` naming a complete round: the older
folder is deleted only after the pointer moved on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

POINTER = "latest.json"
FORMAT = 1


class CheckpointMismatchError(ValueError):
    """The checkpoint directory holds a run made with another configuration."""


@dataclass
class RoundCheckpoint:
    """What a finished round leaves behind (see the module docstring)."""

    round_index: int
    state: dict[str, Any]
    student_weights: list[np.ndarray]
    optimizer_variables: list[np.ndarray]
    best_weights: list[np.ndarray] | None
    buffer_arrays: dict[str, np.ndarray]


def fingerprint(settings: dict[str, Any]) -> str:
    """SHA-256 of the settings that decide a run's results, as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_directory(path: str | os.PathLike) -> None:
    """Creates ``path`` if needed; a clear error if it is a file or not writable."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"checkpoint_dir {path} exists and is not a directory.")
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"checkpoint_dir {path} is not writable.")


def save_round(path: str | os.PathLike, checkpoint: RoundCheckpoint) -> None:
    """Writes one round's checkpoint under ``path``, then points ``latest.json`` at it."""
    path = os.fspath(path)
    folder = f"round-{checkpoint.round_index:06d}"
    staging = tempfile.mkdtemp(prefix=f".{folder}-", dir=path)
    try:
        _write_json(os.path.join(staging, "state.json"), {"format": FORMAT, **checkpoint.state})
        _write_arrays(os.path.join(staging, "student.npz"), checkpoint.student_weights)
        _write_arrays(os.path.join(staging, "optimizer.npz"), checkpoint.optimizer_variables)
        if checkpoint.best_weights is not None:
            _write_arrays(os.path.join(staging, "best.npz"), checkpoint.best_weights)
        with open(os.path.join(staging, "buffer.npz"), "wb") as file:
            np.savez(file, **checkpoint.buffer_arrays)
            _sync(file)
        final = os.path.join(path, folder)
        if os.path.exists(final):  # a round written but not yet pointed at by a killed run
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pointer = {"round": checkpoint.round_index, "folder": folder}
    _write_json_atomic(os.path.join(path, POINTER), pointer)
    for name in os.listdir(path):  # older rounds, and staging folders of killed runs
        if name.lstrip(".").startswith("round-") and name != folder:
            shutil.rmtree(os.path.join(path, name), ignore_errors=True)


def load_latest(
    path: str | os.PathLike, expected_fingerprint: str, settings: dict
) -> RoundCheckpoint | None:
    """The last finished round under ``path``, or None if there is none.

    Raises:
        CheckpointMismatchError: the checkpoint was made with other settings
            (the message names the settings that differ).
    """
    path = os.fspath(path)
    folder = _pointed_folder(path)
    if folder is None:
        return None
    folder = os.path.join(path, folder)
    with open(os.path.join(folder, "state.json")) as file:
        state = json.load(file)
    if state.get("format") != FORMAT:
        raise CheckpointMismatchError(
            f"{path}: checkpoint format {state.get('format')!r}, this tfkd reads {FORMAT}."
        )
    if state["fingerprint"] != expected_fingerprint:
        saved = state.get("settings", {})
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise CheckpointMismatchError(
            f"{path} holds a checkpoint of a run with other settings "
            f"(differ: {', '.join(differ) or 'unknown'}); use another checkpoint_dir "
            "or the same settings."
        )
    best = os.path.join(folder, "best.npz")
    with np.load(os.path.join(folder, "buffer.npz"), allow_pickle=False) as archive:
        buffer_arrays = {key: archive[key] for key in archive.files}
    return RoundCheckpoint(
        round_index=int(state["round"]),
        state=state,
        student_weights=_read_arrays(os.path.join(folder, "student.npz")),
        optimizer_variables=_read_arrays(os.path.join(folder, "optimizer.npz")),
        best_weights=_read_arrays(best) if os.path.exists(best) else None,
        buffer_arrays=buffer_arrays,
    )


def _pointed_folder(path: str) -> str | None:
    pointer = os.path.join(path, POINTER)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as file:
        return json.load(file)["folder"]


def _write_arrays(path: str, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as file:
        np.savez(file, *[np.asarray(a) for a in arrays])
        _sync(file)


def _read_arrays(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def _write_json(path: str, value: dict) -> None:
    with open(path, "w") as file:
        json.dump(value, file, allow_nan=False)
        _sync(file)


def _write_json_atomic(path: str, value: dict) -> None:
    temporary = f"{path}.tmp"
    _write_json(temporary, value)
    os.replace(temporary, path)


def _sync(file) -> None:
    file.flush()
    os.fsync(file.fileno())
