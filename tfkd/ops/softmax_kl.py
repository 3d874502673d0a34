"""Temperature softmax KL divergence, per example, with two backends.

For teacher logits ``t`` and student logits ``s`` (last axis = actions), a
teacher temperature ``T`` and a student temperature ``S``::

    p = softmax(t / T),   q = softmax(s / S)
    kl = sum_a p_a (log p_a - log q_a)          (no T^2 factor here)
    d kl / d s = (q - p) / S

``T = S`` is Hinton et al. (2015) soft-target distillation; a small ``T``
(e.g. 0.01) with ``S = 1`` is the sharpened-Q policy distillation of Rusu et
al. (2016), "Policy Distillation".

Backends:
    "cpp": tfkd's fused C++ kernel (loss and gradient in one pass, SIMD,
        rows split over TensorFlow's inter-op threads) as a real TensorFlow
        op, ``TfkdSoftmaxKl`` from ``tfkd/_tf_ops.so``, inside
        ``tf.custom_gradient``; the backward's chain rule is the op
        ``TfkdScaleRows``. CPU only; not under XLA. A SavedModel that holds
        it loads only where tfkd is imported.
    "tf": TensorFlow ops (autodiff). Runs anywhere: GPU, XLA, SavedModel.
    "auto": "tf" on GPU and under XLA, "cpp" otherwise.

``last_backend()`` tells which backend the most recent call chose (at trace
time inside a ``tf.function``).
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings

import numpy as np
import tensorflow as tf

try:
    from tfkd import _C
except ImportError as _error:  # reported by kernel_info() and by the tests
    _C = None
    _IMPORT_ERROR: str | None = str(_error)
else:
    _IMPORT_ERROR = None

OP_LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "_tf_ops.so")
try:
    _OPS = tf.load_op_library(OP_LIBRARY)
except (tf.errors.NotFoundError, OSError) as _error:  # reported like _C's
    _OPS = None
    _OP_ERROR: str | None = f"{OP_LIBRARY}: {_error}"
else:
    _OP_ERROR = None

BACKENDS = ("auto", "cpp", "tf")

_state = threading.local()


def kernel_available() -> bool:
    """Whether the C++ kernel is built: ``tfkd._C`` imports and the op library loads."""
    return _C is not None and _OPS is not None


def kernel_info() -> dict:
    """The C++ kernel's status: availability, SIMD level, why it is missing."""
    errors = [e for e in (_IMPORT_ERROR, _OP_ERROR) if e]
    return {
        "available": kernel_available(),
        "simd": _C.simd_level() if _C is not None else None,
        "op_library": OP_LIBRARY if _OPS is not None else None,
        "import_error": "; ".join(errors) or None,
    }


def last_backend() -> str | None:
    """The backend the most recent ``softmax_kl`` call in this thread chose.

    Returns:
        "cpp", "tf", or None before the first call. Inside a
        ``tf.function`` the choice is made while tracing.
    """
    return getattr(_state, "backend", None)


def softmax_kl_numpy(teacher_logits, student_logits, temperature=1.0, student_temperature=None):
    """The raw C++ kernel on NumPy arrays: per-example KL and its gradient.

    Args:
        teacher_logits: array [..., A] of floats; -inf marks a masked action.
        student_logits: array of the same shape.
        temperature: teacher temperature T > 0.
        student_temperature: student temperature S > 0; defaults to T.

    Returns:
        (kl, grad): kl has the input shape without its last axis, grad
        (= d kl / d student_logits = (q - p) / S) the input shape. float64 if
        either input is float64; in the student's dtype when both are
        float16 / bfloat16 (computed in float32); else float32.

    Raises:
        ValueError: bad shapes, non-float dtypes or temperatures.
        RuntimeError: the extension is not built.
    """
    if _C is None:
        raise RuntimeError(f"tfkd's C++ extension is not available: {_IMPORT_ERROR}")
    t = np.asarray(teacher_logits)
    s = np.asarray(student_logits)
    t_dtype = _check_np_dtype(t, "teacher_logits")
    s_dtype = _check_np_dtype(s, "student_logits")
    _check_static_shapes(t.shape, s.shape)
    T, S = _check_temperatures(temperature, student_temperature)
    a = t.shape[-1]
    kl, grad = _C.softmax_kl(_as_kernel_dtype(t).reshape(-1, a),
                             _as_kernel_dtype(s).reshape(-1, a), T, S)
    kl = kl.reshape(t.shape[:-1])
    grad = grad.reshape(t.shape)
    if max(t_dtype.itemsize, s_dtype.itemsize) < 4:  # float16 / bfloat16 in, out
        kl, grad = kl.astype(s_dtype), grad.astype(s_dtype)
    return kl, grad


def softmax_kl(teacher_logits, student_logits, temperature=1.0, student_temperature=None,
               backend="auto"):
    """Per-example KL(softmax(t / T) || softmax(s / S)), differentiable in s.

    Args:
        teacher_logits: tensor [..., A] (rank >= 2) of floats; -inf marks a
            masked action. Treated as a constant: no gradient flows to it.
        student_logits: tensor of the same shape.
        temperature: teacher temperature T > 0 (number or scalar tensor).
        student_temperature: student temperature S > 0; defaults to T.
        backend: "auto", "cpp" or "tf" (see the module docstring).

    Returns:
        tf.Tensor of the input shape without its last axis, in the student's
        dtype (float16 / bfloat16 are computed in float32). No T^2 factor.

    Raises:
        ValueError: bad shapes, non-float dtypes, temperatures <= 0 or not
            finite, an unknown backend, or "cpp" without the extension.
        tf.errors.InvalidArgumentError: the same problems found only at run
            time inside a graph (dynamic shapes, tensor temperatures).
    """
    t, s, T, S, out_dtype = _prepare(teacher_logits, student_logits, temperature,
                                     student_temperature, backend)
    if s.shape.rank == 2:
        return tf.cast(_dispatch(backend, t, s, T, S)[0], out_dtype)
    actions = tf.shape(s)[-1]
    kl, _ = _dispatch(backend, tf.reshape(t, [-1, actions]), tf.reshape(s, [-1, actions]), T, S)
    return tf.cast(tf.reshape(kl, tf.shape(s)[:-1]), out_dtype)


def softmax_kl_mean(teacher_logits, student_logits, temperature=1.0, student_temperature=None,
                    sample_weight=None, scale=1.0, backend="auto", return_per_example=False):
    """``scale * sum_i w_i kl_i / n``: the weighted batch mean of ``softmax_kl``.

    n counts every example (all axes but the last), as Keras'
    "sum_over_batch_size" reduction does; w = 1 without ``sample_weight``.
    The same value as ``scale * reduce_mean(w * softmax_kl(...))``, but the
    "cpp" backend multiplies each gradient row by its known factor
    ``scale * w_i / n`` inside the kernel's one pass, so the backward needs no
    pass over the gradient at all when the loss is differentiated directly
    (an upstream gradient of 1; any other upstream still costs one in-place
    scaling). Hinton's loss is ``softmax_kl_mean(t, s, T, scale=T**2)``.

    Args:
        teacher_logits, student_logits, temperature, student_temperature,
            backend: as for ``softmax_kl``.
        sample_weight: optional weights of shape ``[...]`` (the logits' shape
            without its last axis); constants: no gradient flows to them.
        scale: a Python number folded into the loss (e.g. T^2).
        return_per_example: also return the per-example KL that the loss
            was made of (unweighted, unscaled; no gradient flows through it),
            e.g. for metrics, at no extra cost.

    Returns:
        A scalar tf.Tensor in the student's dtype; 0 for an empty batch. With
        ``return_per_example``, a pair (that scalar, ``softmax_kl``'s values).

    Raises:
        ValueError / tf.errors.InvalidArgumentError: as ``softmax_kl``, and a
            ``sample_weight`` whose shape is not the logits' without the last
            axis, or a ``scale`` that is not a finite number.
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not np.isfinite(scale):
        raise ValueError(f"scale must be a finite real number, got {scale!r}")
    t, s, T, S, out_dtype = _prepare(teacher_logits, student_logits, temperature,
                                     student_temperature, backend)
    actions = tf.shape(s)[-1]
    t2, s2 = tf.reshape(t, [-1, actions]), tf.reshape(s, [-1, actions])
    n = tf.shape(s2)[0]
    factor = tf.constant(scale, s2.dtype) / tf.cast(tf.maximum(n, 1), s2.dtype)
    weights = tf.fill([n], factor)
    if sample_weight is not None:
        weights = weights * tf.stop_gradient(_flat_sample_weight(sample_weight, s, s2.dtype))
    loss, kl = _dispatch(backend, t2, s2, T, S, weights)
    loss = tf.cast(loss, out_dtype)
    if not return_per_example:
        return loss
    return loss, tf.cast(tf.reshape(kl, tf.shape(s)[:-1]), out_dtype)


def _prepare(teacher_logits, student_logits, temperature, student_temperature, backend):
    """Checked (t, s, T, S, output dtype), in the compute dtype."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    t = tf.convert_to_tensor(teacher_logits)
    s = tf.convert_to_tensor(student_logits)
    _check_tf_dtype(t, "teacher_logits")
    _check_tf_dtype(s, "student_logits")
    out_dtype = s.dtype
    compute_dtype = tf.float64 if tf.float64 in (t.dtype, s.dtype) else tf.float32
    t = tf.cast(t, compute_dtype)
    s = tf.cast(s, compute_dtype)
    if t.shape.rank is not None and t.shape.rank < 2 or s.shape.rank is not None and s.shape.rank < 2:
        raise ValueError(f"softmax_kl expects logits of rank >= 2 [..., actions], got shapes "
                         f"{t.shape} and {s.shape}")
    if t.shape.rank is not None and s.shape.rank is not None:
        _check_static_shapes(tuple(t.shape), tuple(s.shape))
    T, S = _temperature_tensors(temperature, student_temperature, compute_dtype)
    if not (t.shape.is_fully_defined() and s.shape.is_fully_defined()):
        t, s = _check_runtime_shapes(t, s)  # static shapes were checked above
    return t, s, T, S, out_dtype


def _flat_sample_weight(sample_weight, s, dtype):
    """sample_weight as one weight per row of s reshaped to [-1, actions]."""
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


def _check_runtime_shapes(t, s):
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


def _dispatch(backend, t2, s2, T, S, weights=None):
    """(loss, kl) of 2-D logits: the loss is the per-row kl, or sum_i weights_i kl_i
    when weights are given; kl is the per-row kl without gradient, for reporting."""
    chosen = _choose_backend(backend)
    _state.backend = chosen
    if chosen == "cpp":
        return _kl_cpp(t2, s2, T, S, weights)
    kl = _kl_tf(t2, s2, T, S)
    return (kl if weights is None else tf.reduce_sum(weights * kl)), tf.stop_gradient(kl)


_warned_missing_kernel = False


def _choose_backend(backend):
    if backend == "cpp":
        if not kernel_available():
            raise ValueError(f"backend='cpp' but tfkd's C++ kernel is not available: "
                             f"{kernel_info()['import_error']}")
        if _in_xla_context():
            raise ValueError("backend='cpp' cannot run under XLA (jit_compile=True): "
                             "use backend='tf' or 'auto'")
        return "cpp"
    if backend == "tf":
        return "tf"
    if _in_xla_context() or _on_gpu():
        return "tf"
    if not kernel_available():
        global _warned_missing_kernel
        if not _warned_missing_kernel:
            warnings.warn(f"tfkd's C++ kernel is not available "
                          f"({kernel_info()['import_error']}); softmax_kl(backend='auto') uses "
                          "TensorFlow ops", RuntimeWarning, stacklevel=4)
            _warned_missing_kernel = True
        return "tf"
    return "cpp"


def _in_xla_context() -> bool:
    from tensorflow.python.ops import control_flow_util  # no public equivalent

    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _on_gpu() -> bool:
    if not tf.config.list_logical_devices("GPU"):
        return False
    # Eagerly: where a new op runs. In a graph: the requested device scope,
    # "" when none, which TensorFlow places on the GPU.
    return "CPU" not in tf.zeros([]).device.upper()


def _log_softmaxes(t, s, T, S):
    return (tf.nn.log_softmax(_minus_row_max(t) / T, axis=-1),
            tf.nn.log_softmax(_minus_row_max(s) / S, axis=-1))


def _kl_from_log_probs(log_p, log_q):
    # multiply_no_nan: p = 0 (masked or underflowed) adds 0 even where
    # log_p - log_q is -inf or NaN; a NaN row keeps its NaN p.
    return tf.reduce_sum(tf.math.multiply_no_nan(log_p - log_q, tf.exp(log_p)), axis=-1)


def _kl_tf(t, s, T, S):
    """TensorFlow ops (autodiff gives the gradient); none flows to t."""
    return _kl_from_log_probs(*_log_softmaxes(tf.stop_gradient(t), s, T, S))


def _minus_row_max(x):
    """x - max(x) along the actions: exact for nearby values, so large logits
    keep their precision when divided by a small temperature."""
    return x - tf.stop_gradient(tf.reduce_max(x, axis=-1, keepdims=True))


def _kl_cpp(t, s, T, S, weights=None):
    """The C++ kernel: loss and gradient in one pass; the gradient is reused.

    Returns (loss, kl) as ``_dispatch``. With row weights, the loss is
    sum_i weights_i kl_i, the kernel scaling gradient row i by weights_i as
    it writes it, so an upstream gradient of 1 costs nothing more.
    """

    @tf.custom_gradient
    def loss_of_student(s):
        with tf.device("/CPU:0"):  # the op has CPU kernels only
            grad_scale = tf.ones([], s.dtype) if weights is None else weights
            kl, grad = _OPS.tfkd_softmax_kl(t, s, T, S, grad_scale)
            loss = kl if weights is None else tf.reduce_sum(weights * kl)

        def backward(upstream, _):  # kl's own upstream is unused: it leaves through stop_gradient
            with tf.device("/CPU:0"):  # per row, or a scalar; for 1, TfkdScaleRows returns grad
                return _OPS.tfkd_scale_rows(grad, tf.cast(upstream, grad.dtype))

        return (loss, kl), backward

    loss, kl = loss_of_student(s)
    return loss, tf.stop_gradient(kl)


def _check_np_dtype(x: np.ndarray, name: str):
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":  # bfloat16 is ml_dtypes' kind "V"
        raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x.dtype


def _as_kernel_dtype(x: np.ndarray) -> np.ndarray:
    """Native float64 for 8-byte and wider floats, native float32 for the rest."""
    return x.astype(np.float64 if x.dtype.itemsize >= 8 else np.float32, copy=False)


def _check_tf_dtype(x: tf.Tensor, name: str) -> None:
    if not x.dtype.is_floating:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype.name}")


def _check_static_shapes(t_shape, s_shape) -> None:
    if len(t_shape) < 2 or len(s_shape) < 2:
        raise ValueError(f"softmax_kl expects logits of rank >= 2 [..., actions], got shapes "
                         f"{list(t_shape)} and {list(s_shape)}")
    if len(t_shape) != len(s_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(t_shape, s_shape)):
        raise ValueError(f"teacher and student logits differ in shape: {list(t_shape)} vs "
                         f"{list(s_shape)}")
    if t_shape[-1] == 0 or s_shape[-1] == 0:
        raise ValueError("softmax_kl needs at least one action: the last axis has size 0")


def _check_temperature(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def _check_temperatures(temperature, student_temperature):
    T = _check_temperature(_as_number(temperature), "temperature")
    S = T if student_temperature is None else _check_temperature(
        _as_number(student_temperature), "student_temperature")
    return T, S


def _as_number(value):
    if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.shape != ():
            raise ValueError(f"a temperature must be a scalar, got shape {array.shape}")
        return array.item()
    return value


def _temperature_tensors(temperature, student_temperature, dtype):
    """Checks temperatures now when their values are known, else in the graph."""
    if student_temperature is None:
        student_temperature = temperature
    out = []
    for value, name in ((temperature, "temperature"), (student_temperature, "student_temperature")):
        symbolic = tf.is_tensor(value) and not tf.executing_eagerly()
        if not symbolic:
            out.append(tf.constant(_check_temperature(_as_number(value), name), dtype))
            continue
        value = tf.cast(value, dtype)
        if value.shape.rank not in (None, 0):
            raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
        check = tf.debugging.Assert(
            tf.logical_and(tf.math.is_finite(value), value > 0),
            [f"{name} must be finite and > 0, got", value])
        with tf.control_dependencies([check]):
            out.append(tf.identity(value))
    return out
