"""Files that are never half-written: atomic files, atomic folders, checkpoints, lock files.

A leaf module (NumPy only): the ``tfkd`` command uses it before TensorFlow loads.

Every write goes to a temporary name in the destination's folder and is
renamed into place (``os.replace``, atomic on POSIX), so a crash leaves the
previous version or none, never a truncated one. A checkpoint folder is
complete before ``latest.json`` points at it; older ones are removed after.
JSON is strict (no NaN / Infinity: non-finite numbers become null).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from typing import IO, Any, Callable, Iterator

import numpy as np

LATEST_FILE = "latest.json"


def strict_json(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and NaN / ±inf as None."""
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


def _default_mode(path: str, is_folder: bool) -> None:
    # mkstemp / mkdtemp create private (0600 / 0700) entries; a result file
    # gets the permissions any other file of the user would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if is_folder else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to ``path`` (same suffix), renamed onto ``path`` on success."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, dot, suffix = name.partition(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=dot + suffix,
                                         dir=directory)
    os.close(handle)
    try:
        yield temporary
        _default_mode(temporary, is_folder=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes strict JSON atomically."""
    text = json.dumps(strict_json(value), indent=2, allow_nan=False)
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            _sync(file)


def write_npz(path: str | os.PathLike, *arrays: np.ndarray, **named: np.ndarray) -> None:
    """``np.savez`` written atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, *arrays, **named)
            _sync(file)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, loaded without pickle."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def read_array_list(path: str | os.PathLike) -> list[np.ndarray]:
    """The arrays that ``write_npz(path, *arrays)`` wrote, in their order."""
    arrays = read_npz(path)
    return [arrays[f"arr_{i}"] for i in range(len(arrays))]


def replace_directory(write: Callable[[str], None], path: str | os.PathLike) -> None:
    """Calls ``write(temporary_dir)``, then swaps that folder in for ``path``."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        write(temporary)
        _default_mode(temporary, is_folder=True)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.replace(path, os.path.join(old, "x"))
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def save_checkpoint(checkpoint_dir: str | os.PathLike, name: str,
                    write: Callable[[str], None], prefix: str, **details: Any) -> str:
    """Writes ``checkpoint_dir/name`` with ``write(folder)`` and makes it the latest.

    ``latest.json`` holds ``{"checkpoint": name, **details}`` (e.g. the round
    or the env step, for a reader that only wants to know how far a run got).

    Once ``latest.json`` names the new folder, every other folder whose name
    starts with ``prefix`` (older checkpoints, and temporary folders a killed
    run left) is removed.

    Returns:
        The new checkpoint folder.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    replace_directory(write, os.path.join(checkpoint_dir, name))
    write_json(os.path.join(checkpoint_dir, LATEST_FILE), {"checkpoint": name, **details})
    for entry in os.listdir(checkpoint_dir):
        if entry.lstrip(".").startswith(prefix) and entry != name:
            shutil.rmtree(os.path.join(checkpoint_dir, entry), ignore_errors=True)
    return os.path.join(checkpoint_dir, name)


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint folder in ``checkpoint_dir``, or None.

    Raises:
        ValueError: if ``latest.json`` is corrupt or names a missing folder.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
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


def check_directory(path: str | os.PathLike | None, what: str) -> None:
    """Raises ``ValueError`` unless ``path`` is None, a writable folder, or creatable."""
    if path is None:
        return
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a file, not a folder.")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r} is not writable ({existing!r} is not a writable "
                         "folder).")


def try_lock(path: str | os.PathLike) -> IO[str] | None:
    """Takes an exclusive ``fcntl.flock`` on the file ``path`` without waiting.

    Returns:
        The open lock file, this process's id written in it (closing it, or
        the process ending, releases the lock); None if another process
        holds the lock.
    """
    lock = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.close()
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _sync(file) -> None:
    file.flush()
    os.fsync(file.fileno())
