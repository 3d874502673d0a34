"""Round checkpoints of a distillation run: written atomically, refused if foreign.

Layout of a checkpoint directory::

    DIR/latest.json          {"checkpoint": "round-00000k", "round": k}; replaced atomically
    DIR/round-00000k/        one finished round, written in full before latest.json names it
        state.json           round index, history, RNG states, fingerprint and config
        student.npz          student weights (arr_0, arr_1, ...)
        optimizer.npz        optimizer variables
        best.npz             the best round's student weights (keep_best only)
        buffer.npz           each task's buffer: observations and teacher outputs

Everything is plain JSON or ``.npz`` read with ``allow_pickle=False``. A kill
at any moment leaves ``latest.json`` naming a complete round: the older
folder is deleted only after the pointer moved on (``tfkd.files``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfkd import files

# 2: the state holds a list of tasks (multi-task runs); older checkpoints are refused.
FORMAT = 2
PREFIX = "round-"


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
    """Creates ``path`` if needed; a clear one-line error if it is a file or not writable."""
    files.check_directory(path, "checkpoint_dir")
    os.makedirs(path, exist_ok=True)


def save_round(path: str | os.PathLike, checkpoint: RoundCheckpoint) -> None:
    """Writes one round's checkpoint under ``path``, then points ``latest.json`` at it."""

    def write(folder: str) -> None:
        files.write_json(os.path.join(folder, "state.json"), {"format": FORMAT, **checkpoint.state})
        files.write_npz(os.path.join(folder, "student.npz"), *checkpoint.student_weights)
        files.write_npz(os.path.join(folder, "optimizer.npz"), *checkpoint.optimizer_variables)
        if checkpoint.best_weights is not None:
            files.write_npz(os.path.join(folder, "best.npz"), *checkpoint.best_weights)
        files.write_npz(os.path.join(folder, "buffer.npz"), **checkpoint.buffer_arrays)

    files.save_checkpoint(path, f"{PREFIX}{checkpoint.round_index:06d}", write, PREFIX,
                          round=checkpoint.round_index)


def load_latest(
    path: str | os.PathLike, expected_fingerprint: str, settings: dict
) -> RoundCheckpoint | None:
    """The last finished round under ``path``, or None if there is none.

    Raises:
        CheckpointMismatchError: the checkpoint was made with other settings
            (the message names the settings that differ).
    """
    path = os.fspath(path)
    folder = files.latest_checkpoint(path)
    if folder is None:
        return None
    with open(os.path.join(folder, "state.json"), encoding="utf-8") as file:
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
    return RoundCheckpoint(
        round_index=int(state["round"]),
        state=state,
        student_weights=files.read_array_list(os.path.join(folder, "student.npz")),
        optimizer_variables=files.read_array_list(os.path.join(folder, "optimizer.npz")),
        best_weights=files.read_array_list(best) if os.path.exists(best) else None,
        buffer_arrays=files.read_npz(os.path.join(folder, "buffer.npz")),
    )

