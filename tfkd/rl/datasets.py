"""Teacher-labelled datasets: a bounded in-memory buffer, ``tf.data``, ``.npz``.

A dataset is a pair of arrays ``observations [n, *obs_shape]`` and
``teacher_outputs [n, num_actions]`` — exactly what ``tfkd.Distiller`` fits
on with ``teacher=None``.
"""

from __future__ import annotations

import math
import os
import pathlib
import zipfile
import zlib

import numpy as np
import tensorflow as tf
from numpy.lib import format as npy_format

from tfkd import files

NPZ_KEYS = ("observations", "teacher_outputs")
REPLACEMENTS = ("fifo", "reservoir")
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floating point
#: The most bytes :func:`load_npz` lets one array claim: 16 GiB, far above any
#: dataset that fits the memory of the machines tfkd trains on.
MAX_NPZ_ARRAY_BYTES = 16 * 2**30


class DatasetFileError(ValueError):
    """A ``.npz`` dataset file is unreadable, corrupt, or does not match."""


class DistillationBuffer:
    """Teacher-labelled states under a memory bound.

    Two ways to stay within ``capacity`` once full:

    - ``"fifo"``: the oldest states are overwritten — the replay memory of
      Rusu et al. 2016 ("Policy Distillation"), right when the data comes from
      one fixed teacher policy;
    - ``"reservoir"``: each of the ``n`` states seen so far is kept with
      probability ``capacity / n`` (Vitter 1985, Algorithm R), so the buffer
      stays a uniform sample of *all* aggregated data, as DAgger's
      aggregation asks (Ross et al. 2011).

    Args:
        capacity: most states held.
        observation_shape: shape of one observation.
        num_actions: width of the teacher outputs.
        observation_dtype: storage dtype of observations (uint8 for Atari).
        replacement: ``"fifo"`` or ``"reservoir"``.
        seed: seeds reservoir sampling and shuffling.
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: tuple[int, ...],
        num_actions: int,
        observation_dtype=np.float32,
        replacement: str = "fifo",
        seed: int = 0,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        if replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}.")
        self.capacity, self.replacement = int(capacity), replacement
        self.observation_shape, self.num_actions = tuple(observation_shape), int(num_actions)
        self._observations = np.zeros((capacity, *observation_shape), dtype=observation_dtype)
        self._teacher_outputs = np.zeros((capacity, num_actions), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self._size = 0
        self.num_seen = 0

    def __len__(self) -> int:
        return self._size

    def add(self, observations: np.ndarray, teacher_outputs: np.ndarray) -> None:
        """Adds a batch of labelled states."""
        observations, teacher_outputs = _check_pair(
            observations, teacher_outputs, self.observation_shape, self.num_actions, "add"
        )
        for start in range(0, len(observations), self.capacity):
            self._add_chunk(
                observations[start : start + self.capacity],
                teacher_outputs[start : start + self.capacity],
            )

    def _add_chunk(self, observations: np.ndarray, teacher_outputs: np.ndarray) -> None:
        n = len(observations)
        if self.replacement == "fifo" or self._size + n <= self.capacity:
            index = (self.num_seen + np.arange(n)) % self.capacity
            keep = np.ones(n, dtype=bool)
        else:  # reservoir: item number k (0-based) replaces a slot w.p. capacity / (k + 1)
            free = self.capacity - self._size
            seen_before = self.num_seen + np.arange(n)
            slots = (self._rng.random(n) * (seen_before + 1)).astype(np.int64)
            slots[:free] = self._size + np.arange(free)
            keep = slots < self.capacity
            index = slots
        self._observations[index[keep]] = observations[keep]
        self._teacher_outputs[index[keep]] = teacher_outputs[keep]
        self.num_seen += n
        self._size = min(self.capacity, self._size + n)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The held ``(observations, teacher_outputs)`` (views, not copies)."""
        return self._observations[: self._size], self._teacher_outputs[: self._size]

    def as_dataset(self, batch_size: int, shuffle: bool = True, seed: int = 0):
        """A ``tf.data.Dataset`` over a snapshot of the buffer; see :func:`to_tf_dataset`."""
        observations, teacher_outputs = self.arrays()
        return to_tf_dataset(observations.copy(), teacher_outputs.copy(), batch_size, shuffle, seed)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the held states to ``path`` (see :func:`save_npz`)."""
        save_npz(path, *self.arrays())

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)``: the held states and the JSON-able rest, for checkpoints.

        ``meta`` holds ``num_seen`` and the reservoir generator's state, so a
        restored buffer replaces the same slots as the original would.
        """
        observations, teacher_outputs = self.arrays()
        arrays = {"observations": observations, "teacher_outputs": teacher_outputs}
        return arrays, {"num_seen": self.num_seen, "rng": self._rng.bit_generator.state}

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restores what :meth:`get_state` returned (shapes are checked)."""
        observations, teacher_outputs = _check_pair(
            arrays["observations"], arrays["teacher_outputs"],
            self.observation_shape, self.num_actions, "set_state",
        )
        if len(observations) > self.capacity:
            raise ValueError(f"set_state: {len(observations)} states exceed capacity {self.capacity}.")
        self._size = len(observations)
        self._observations[: self._size] = observations
        self._teacher_outputs[: self._size] = teacher_outputs
        self.num_seen = int(meta["num_seen"])
        self._rng.bit_generator.state = meta["rng"]


def to_tf_dataset(
    observations: np.ndarray,
    teacher_outputs: np.ndarray,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched ``(observations, teacher_outputs)`` for ``Distiller.fit``: tfkd's one builder.

    Every source of labelled states goes through here: the in-memory
    :class:`DistillationBuffer`, ``.npz`` files (:func:`load_npz`) and replay
    buffers. float64 observations become float32; teacher outputs are float32.

    Args:
        observations: ``[n, *observation_shape]``.
        teacher_outputs: ``[n, num_actions]``, finite.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: reshuffle the examples every epoch.
        seed: the shuffle seed: the same seed gives the same batches.
    """
    observations, teacher_outputs = _check_pair(observations, teacher_outputs, None, None, "data")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if observations.dtype == np.float64:
        observations = observations.astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((observations, teacher_outputs.astype(np.float32)))
    if shuffle:
        dataset = dataset.shuffle(len(observations), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def save_npz(
    path: str | os.PathLike, observations: np.ndarray, teacher_outputs: np.ndarray
) -> pathlib.Path:
    """Saves a labelled dataset as a compressed ``.npz`` with plain arrays only.

    The file is written under a temporary name in the same folder and then
    renamed, so ``path`` is always either the previous file or the complete
    new one. As with ``numpy.savez``, ``.npz`` is appended to a path without it.

    Returns:
        The path written.
    """
    observations, teacher_outputs = _check_pair(observations, teacher_outputs, None, None, "save")
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    with files.atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez_compressed(file, observations=observations, teacher_outputs=teacher_outputs)
            file.flush()
            os.fsync(file.fileno())
    return path


def load_npz(
    path: str | os.PathLike,
    observation_shape: tuple[int, ...] | None = None,
    num_actions: int | None = None,
    max_bytes: int = MAX_NPZ_ARRAY_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads ``(observations, teacher_outputs)`` saved by :func:`save_npz`.

    Loaded with ``allow_pickle=False``: a file cannot run code. Each array's
    ``.npy`` header is read before its data, so an array that claims more than
    ``max_bytes``, or more bytes than its archive member holds, is refused
    without allocating it.

    Args:
        path: the ``.npz`` file.
        observation_shape: if given, the observations must have this shape.
        num_actions: if given, the teacher outputs must have this width.
        max_bytes: the most bytes one array may take in memory (default
            :data:`MAX_NPZ_ARRAY_BYTES`, 16 GiB).

    Raises:
        DatasetFileError: one line saying what is wrong: the file is missing,
            not an ``.npz``, corrupt, lacks a key, holds object or non-numeric
            arrays, claims too much memory, holds NaN or inf, or its arrays do
            not match each other or the expected shapes.
    """
    if not os.path.exists(path):
        raise DatasetFileError(f"{path}: no such dataset file.")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            found = [name[: -len(".npy")] for name in members if name.endswith(".npy")]
            missing = [key for key in NPZ_KEYS if f"{key}.npy" not in members]
            if missing:
                raise DatasetFileError(
                    f"{path}: not a tfkd dataset, missing arrays {missing} "
                    f"(found {found}); expected {list(NPZ_KEYS)}."
                )
            for key in NPZ_KEYS:
                with archive.open(members[f"{key}.npy"]) as member:
                    _check_npy_header(member, members[f"{key}.npy"].file_size, key, path, max_bytes)
        with np.load(path, allow_pickle=False) as arrays:
            observations, teacher_outputs = (arrays[key] for key in NPZ_KEYS)
    except DatasetFileError:
        raise
    except FileNotFoundError as error:
        raise DatasetFileError(f"{path}: no such dataset file.") from error
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise DatasetFileError(
            f"{path}: corrupt or unreadable .npz dataset ({_one_line(error)})."
        ) from error
    try:
        return _check_pair(observations, teacher_outputs, observation_shape, num_actions, str(path))
    except ValueError as error:
        raise DatasetFileError(str(error)) from error


def _check_npy_header(member, member_size: int, key: str, path, max_bytes: int) -> None:
    """Checks one ``.npy`` header (dtype and claimed size) without reading the data."""
    try:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(member)
        else:
            raise DatasetFileError(f"{path}: {key} is in unsupported .npy version {version}.")
    except DatasetFileError:
        raise
    except (ValueError, EOFError, OSError, SyntaxError) as error:
        raise DatasetFileError(
            f"{path}: corrupt or unreadable .npz dataset ({key}: {_one_line(error)})."
        ) from error
    if dtype.hasobject:
        raise DatasetFileError(
            f"{path}: {key} holds Python objects (dtype {dtype}); tfkd datasets hold "
            "numeric arrays only and never unpickle."
        )
    if dtype.kind not in NUMERIC_KINDS:
        raise DatasetFileError(f"{path}: {key} is not numeric (dtype {dtype}).")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > max_bytes:
        raise DatasetFileError(
            f"{path}: {key} claims shape {shape} of {dtype}, {claimed:,} bytes, more than "
            f"the {max_bytes:,} allowed (max_bytes)."
        )
    data_size = member_size - member.tell()
    if claimed != data_size:
        raise DatasetFileError(
            f"{path}: {key} claims shape {shape} of {dtype}, {claimed:,} bytes, but its "
            f"archive member holds {data_size:,}: the header is corrupt."
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_pair(observations, teacher_outputs, observation_shape, num_actions, where):
    observations, teacher_outputs = np.asarray(observations), np.asarray(teacher_outputs)
    if observations.dtype.hasobject or teacher_outputs.dtype.hasobject:
        raise ValueError(f"{where}: object arrays are not allowed.")
    if observations.dtype.kind not in NUMERIC_KINDS:
        raise ValueError(f"{where}: observations are not numeric (dtype {observations.dtype}).")
    if teacher_outputs.ndim != 2:
        raise ValueError(
            f"{where}: teacher_outputs must be [n, num_actions], got shape {teacher_outputs.shape}."
        )
    if observations.ndim < 1 or len(observations) != len(teacher_outputs):
        raise ValueError(
            f"{where}: {observations.shape[:1]} observations but {len(teacher_outputs)} "
            "teacher outputs; they must have the same length."
        )
    if observation_shape is not None and observations.shape[1:] != tuple(observation_shape):
        raise ValueError(
            f"{where}: observations have shape {observations.shape[1:]} each, "
            f"expected {tuple(observation_shape)}."
        )
    if num_actions is not None and teacher_outputs.shape[1] != num_actions:
        raise ValueError(
            f"{where}: teacher outputs have {teacher_outputs.shape[1]} actions, "
            f"expected {num_actions}."
        )
    if not np.issubdtype(teacher_outputs.dtype, np.floating):
        raise ValueError(
            f"{where}: teacher outputs must be floating point, got {teacher_outputs.dtype}."
        )
    _check_finite(teacher_outputs, "teacher outputs", where)
    if observations.dtype.kind == "f":
        _check_finite(observations, "observations", where)
    return observations, teacher_outputs


def _check_finite(array: np.ndarray, name: str, where) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.argmin(finite.reshape(len(array), -1).all(axis=1)))
        raise ValueError(f"{where}: {name} contain NaN or inf (first in row {row}).")
