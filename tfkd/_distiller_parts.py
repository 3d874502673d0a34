"""The pieces of ``tfkd.Distiller`` that are not the model itself: loss and
metric resolution, per-example reductions, the fused metric, the NaN guard,
the fingerprint of the teacher-output cache."""

import hashlib

import keras
import numpy as np
import tensorflow as tf

from tfkd import losses as tfkd_losses

_TASK_LOSSES = {
    "sparse_categorical_crossentropy": lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True),
    "categorical_crossentropy": lambda: keras.losses.CategoricalCrossentropy(from_logits=True),
    "mse": keras.losses.MeanSquaredError,
}

NON_FINITE = ("tfkd.Distiller: the loss or its gradient is NaN or inf; training stopped "
               "without applying that step, so the weights are the last finite ones.")


class Means(keras.metrics.Metric):
    """Several batch-weighted means in one metric: two variable updates a step."""

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.total = self.add_variable(shape=(len(self.names),), initializer="zeros",
                                       name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values, batch_size):
        batch_size = tf.cast(batch_size, self.total.dtype)
        self.total.assign_add(tf.cast(values, self.total.dtype) * batch_size)
        self.count.assign_add(batch_size)

    def result(self):
        means = tf.math.divide_no_nan(self.total, self.count)
        return {name: means[i] for i, name in enumerate(self.names)}

    def get_config(self):
        return {**super().get_config(), "names": self.names}


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if logs and logs.get("nonfinite_steps", 0) > 0:
            raise FloatingPointError(NON_FINITE)


def per_example(loss, y_true, y_pred):
    """Unreduced values of a Loss or callable, averaged to shape [batch]."""
    values = loss.call(y_true, y_pred) if isinstance(loss, keras.losses.Loss) else loss(
        y_true, y_pred)
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        raise ValueError(f"the loss {getattr(loss, 'name', loss)!r} returned a scalar; tfkd "
                         f"needs one value per example (reduction happens in the Distiller)")
    return mean_over_rows(values)


def mean_over_rows(values):
    """[batch, ...] values averaged to [batch] (over each example's rows)."""
    if values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def batch_mean(values, sample_weight):
    """Mean over the last (batch) axis of sample_weight * values."""
    if sample_weight is not None:
        values = values * tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return tf.reduce_mean(values, axis=-1)


def entropy(logits):
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def num_replicas():
    return tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)


def static_output_shape(model):
    outputs = getattr(model, "outputs", None) if isinstance(model, keras.Model) else None
    if not outputs or len(outputs) != 1:
        return None
    return tuple(outputs[0].shape)


def assert_same_shape(teacher_shape, student_shape):
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    if len(teacher_shape) != len(student_shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(teacher_shape, student_shape)):
        raise ValueError(f"teacher and student outputs differ in shape: teacher "
                         f"{teacher_shape}, student {student_shape}; they must output the "
                         f"same number of actions / classes")


def with_backend(loss, backend):
    if backend is None or getattr(loss, "backend", backend) == backend:
        return loss
    return loss.__class__.from_config({**loss.get_config(), "backend": backend})


def has_fused_batch_mean(loss):
    """Whether the loss is a tfkd temperature KL whose ``batch_mean`` is its ``call``.

    A subclass that overrides ``call`` (and not ``batch_mean``) is reduced per
    example like any other loss, so its own ``call`` is what trains.
    """
    return isinstance(loss, tfkd_losses.TemperatureKL) and (
        type(loss).call is tfkd_losses.TemperatureKL.call
        or type(loss).batch_mean is not tfkd_losses.TemperatureKL.batch_mean)


def reject_probability_kl(loss):
    if isinstance(loss, keras.losses.KLDivergence):
        raise ValueError("keras.losses.KLDivergence expects probabilities, but the Distiller "
                         "gives it logits; use tfkd.losses.SoftTargetKL (or the default)")


def resolve_task_loss(task_loss, alpha):
    if task_loss is None:
        return _TASK_LOSSES["sparse_categorical_crossentropy"]() if alpha > 0 else None
    if isinstance(task_loss, str):
        if task_loss not in _TASK_LOSSES:
            raise ValueError(f"unknown task_loss {task_loss!r}; expected one of "
                             f"{sorted(_TASK_LOSSES)}, a keras Loss or a callable")
        return _TASK_LOSSES[task_loss]()
    if not callable(task_loss):
        raise ValueError(f"task_loss must be a name, a loss or a callable, got {task_loss!r}")
    return task_loss


def resolve_metric(metric):
    if metric in ("accuracy", "acc"):
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if isinstance(metric, str):
        metric = keras.metrics.get(metric)
        if isinstance(metric, type):
            return metric()
        return keras.metrics.MeanMetricWrapper(metric, name=metric.__name__)
    return metric


def as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


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
