"""The teacher-output cache of ``tfkd.Distiller.fit`` on in-memory arrays.

A frozen Keras teacher gives the same outputs for the same observations, so
``fit`` runs it once over ``x`` and trains on the stored outputs instead of
running it every step of every epoch. One entry is kept, keyed by a digest
of ``x`` and of the teacher's weights.
"""

import hashlib

import keras
import numpy as np
import tensorflow as tf

__all__ = ["TeacherOutputCache", "array_leaves", "fingerprint"]


class TeacherOutputCache:
    """The latest teacher outputs, reused while ``x`` and the teacher's weights stay the same.

    Not tracked by Keras and not saved with the model.
    """

    def __init__(self):
        self._key = None
        self._outputs = None

    def outputs(self, teacher, x, batch_size=None):
        """The teacher's outputs on ``x`` (``teacher.predict`` in inference mode), cached.

        Args:
            teacher: a ``keras.Model``.
            x: in-memory array data (see ``array_leaves``).
            batch_size: fit's batch size; predict uses at least 1024.

        Returns:
            The outputs as NumPy arrays, computed now or by an earlier call
            with equal ``x`` and equal teacher weights.
        """
        leaves = array_leaves(x)
        key = (tuple(path for path, _ in leaves), fingerprint(a for _, a in leaves),
               fingerprint(w.numpy() for w in teacher.weights))
        if self._key != key:
            self._key = self._outputs = None  # free the old outputs first
            self._outputs = teacher.predict(x, batch_size=max(batch_size or 32, 1024),
                                            verbose=0)
            self._key = key
        return self._outputs


def array_leaves(data):
    """The (path, array) leaves of ``data``, or None unless it is in-memory array data.

    Array data is a NumPy array or a ``tf.Tensor``, or a dict / list / tuple of
    them (not a ``tf.data.Dataset``, a generator, a ``PyDataset``, ragged or
    sparse tensors, or strings).
    """
    if data is None or not isinstance(data, (np.ndarray, tf.Tensor, dict, list, tuple)):
        return None
    leaves = keras.tree.flatten_with_path(data)
    if not leaves or not all(isinstance(a, (np.ndarray, tf.Tensor)) for _, a in leaves):
        return None
    if any(np.dtype(a.dtype.as_numpy_dtype if isinstance(a, tf.Tensor) else a.dtype) == object
           for _, a in leaves):
        return None
    return leaves


def fingerprint(arrays):
    """A hex digest of the arrays' shapes, dtypes and bytes, in order.

    Args:
        arrays: NumPy arrays, tensors or variables (anything ``np.asarray`` takes).

    Returns:
        A SHA-256 hex digest (hardware-accelerated on most CPUs); equal arrays
        give equal digests.
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.asarray(array)
        digest.update(f"{array.shape}{array.dtype.str};".encode())
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return digest.hexdigest()
