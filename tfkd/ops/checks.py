"""Input checks for the softmax-KL ops: one ValueError per problem, naming
it, whichever backend runs; or, for what only a running graph can see
(dynamic shapes, tensor temperatures), assertions that raise
tf.errors.InvalidArgumentError with the same words."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

# A temperature's reciprocal multiplies the logits in float32 (and in
# float64): a normal float32 T keeps 1 / T finite in both.
_FLOAT32 = np.finfo(np.float32)
TEMPERATURE_RANGE = (float(_FLOAT32.tiny), float(_FLOAT32.max))


def temperature_message(name: str) -> str:
    """The words of every bad-temperature error, eager or in a graph."""
    low, high = TEMPERATURE_RANGE
    return f"{name} must be finite and > 0, a normal float32 ({low:.4g} to {high:.4g})"


def check_temperature(value, name: str) -> float:
    """``value`` as a float if it is a real number in ``TEMPERATURE_RANGE``.

    Raises:
        ValueError: not a real number (bools included), or outside the
            range: <= 0, NaN, infinite, or so small that float32 holds it
            as a subnormal number or 0 (1e-39), whose reciprocal overflows.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    low, high = TEMPERATURE_RANGE
    if not low <= value <= high:
        raise ValueError(f"{temperature_message(name)}, got {value}")
    return value


def check_temperatures(temperature, student_temperature) -> tuple[float, float]:
    """(T, S) as floats; S defaults to T."""
    T = check_temperature(as_number(temperature), "temperature")
    S = T if student_temperature is None else check_temperature(
        as_number(student_temperature), "student_temperature")
    return T, S


def as_number(value):
    """A scalar tensor or array as a Python number; anything else unchanged."""
    if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.shape != ():
            raise ValueError(f"a temperature must be a scalar, got shape {array.shape}")
        return array.item()
    return value


def temperature_tensors(temperature, student_temperature, dtype):
    """(T, S) as scalar tensors of ``dtype``; S defaults to T.

    Checked now when their values are known, else by an assertion in the
    graph that runs before they are used.
    """
    if student_temperature is None:
        student_temperature = temperature
    out = []
    for value, name in ((temperature, "temperature"), (student_temperature, "student_temperature")):
        symbolic = tf.is_tensor(value) and not tf.executing_eagerly()
        if not symbolic:
            out.append(tf.constant(check_temperature(as_number(value), name), dtype))
            continue
        value = tf.cast(value, dtype)
        if value.shape.rank not in (None, 0):
            raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
        low, high = TEMPERATURE_RANGE
        in_range = tf.logical_and(value >= tf.constant(low, dtype),
                                  value <= tf.constant(high, dtype))
        check = tf.debugging.Assert(in_range, [f"{temperature_message(name)}, got", value])
        with tf.control_dependencies([check]):
            out.append(tf.identity(value))
    return out


def check_scale(scale) -> None:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale):
        raise ValueError(f"scale must be a finite real number, got {scale!r}")


def check_np_dtype(x: np.ndarray, name: str) -> np.dtype:
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":  # bfloat16 is ml_dtypes' kind "V"
        raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x.dtype


def check_tf_dtype(x: tf.Tensor, name: str) -> None:
    if not x.dtype.is_floating:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype.name}")


def check_static_shapes(t_shape, s_shape) -> None:
    """Known shapes: rank >= 2, equal (None matches anything), >= 1 action."""
    if len(t_shape) < 2 or len(s_shape) < 2:
        raise ValueError(f"softmax_kl expects logits of rank >= 2 [..., actions], got shapes "
                         f"{list(t_shape)} and {list(s_shape)}")
    if len(t_shape) != len(s_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(t_shape, s_shape)):
        raise ValueError(f"teacher and student logits differ in shape: {list(t_shape)} vs "
                         f"{list(s_shape)}")
    if t_shape[-1] == 0 or s_shape[-1] == 0:
        raise ValueError("softmax_kl needs at least one action: the last axis has size 0")


def check_runtime_shapes(t, s):
    """(t, s) behind graph assertions of the checks ``check_static_shapes``
    could not make: the ranks, the shapes, at least one action."""
    checks = [tf.debugging.assert_greater_equal(
                  tf.rank(s), 2, message="softmax_kl expects logits of rank >= 2 [..., actions]"),
              tf.debugging.assert_equal(tf.rank(t), tf.rank(s),
                                        message="teacher and student logits differ in shape (rank)")]
    with tf.control_dependencies(checks):
        t, s = tf.identity(t), tf.identity(s)
    checks = [tf.debugging.assert_equal(tf.shape(t), tf.shape(s),
                                        message="teacher and student logits differ in shape"),
              tf.debugging.assert_positive(tf.shape(s)[-1],
                                           message="softmax_kl needs at least one action")]
    with tf.control_dependencies(checks):
        return tf.identity(t), tf.identity(s)


def flat_sample_weight(sample_weight, s, dtype):
    """sample_weight as one weight per row of s reshaped to [-1, actions],
    checked to have s's shape without the last axis."""
    w = tf.cast(tf.convert_to_tensor(sample_weight), dtype)
    expected = s.shape[:-1]
    if w.shape.rank is not None and expected.rank is not None and (
            w.shape.rank != expected.rank or not w.shape.is_compatible_with(expected)):
        raise ValueError(f"sample_weight must have the logits' shape without the last axis, "
                         f"{expected}, got {w.shape}")
    check = tf.debugging.assert_equal(tf.shape(w), tf.shape(s)[:-1], message=(
        "sample_weight must have the logits' shape without the last axis"))
    with tf.control_dependencies([check]):
        return tf.reshape(w, [-1])
