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
time inside a ``tf.function``). The kernel's loading and custom gradient are
in ``kernel.py``, the input checks in ``checks.py``.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # no public equivalent

from tfkd.ops import checks
from tfkd.ops.kernel import kernel_available, kernel_info, kl_cpp, require_extension

BACKENDS = ("auto", "cpp", "tf")

_state = threading.local()


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
        ValueError: bad shapes, non-float dtypes or temperatures (as for
            ``softmax_kl``).
        RuntimeError: the extension is not built.
    """
    extension = require_extension()
    t = np.asarray(teacher_logits)
    s = np.asarray(student_logits)
    t_dtype = checks.check_np_dtype(t, "teacher_logits")
    s_dtype = checks.check_np_dtype(s, "student_logits")
    checks.check_static_shapes(t.shape, s.shape)
    T, S = checks.check_temperatures(temperature, student_temperature)
    a = t.shape[-1]
    kl, grad = extension.softmax_kl(_as_kernel_dtype(t).reshape(-1, a),
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
        ValueError: bad shapes, non-float dtypes, a temperature that is not
            a normal positive float32 (<= 0, NaN, past float32's largest, or
            so small that 1 / T overflows: ``checks.TEMPERATURE_RANGE``), an unknown
            backend, or "cpp" without the extension.
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
    checks.check_scale(scale)
    t, s, T, S, out_dtype = _prepare(teacher_logits, student_logits, temperature,
                                     student_temperature, backend)
    actions = tf.shape(s)[-1]
    t2, s2 = tf.reshape(t, [-1, actions]), tf.reshape(s, [-1, actions])
    n = tf.shape(s2)[0]
    factor = tf.constant(scale, s2.dtype) / tf.cast(tf.maximum(n, 1), s2.dtype)
    weights = tf.fill([n], factor)
    if sample_weight is not None:
        weights = weights * tf.stop_gradient(checks.flat_sample_weight(sample_weight, s, s2.dtype))
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
    checks.check_tf_dtype(t, "teacher_logits")
    checks.check_tf_dtype(s, "student_logits")
    out_dtype = s.dtype
    compute_dtype = tf.float64 if tf.float64 in (t.dtype, s.dtype) else tf.float32
    t = tf.cast(t, compute_dtype)
    s = tf.cast(s, compute_dtype)
    if t.shape.rank is not None and t.shape.rank < 2 or s.shape.rank is not None and s.shape.rank < 2:
        raise ValueError(f"softmax_kl expects logits of rank >= 2 [..., actions], got shapes "
                         f"{t.shape} and {s.shape}")
    if t.shape.rank is not None and s.shape.rank is not None:
        checks.check_static_shapes(tuple(t.shape), tuple(s.shape))
    T, S = checks.temperature_tensors(temperature, student_temperature, compute_dtype)
    if not (t.shape.is_fully_defined() and s.shape.is_fully_defined()):
        t, s = checks.check_runtime_shapes(t, s)  # static shapes were checked above
    return t, s, T, S, out_dtype


def _dispatch(backend, t2, s2, T, S, weights=None):
    """(loss, kl) of 2-D logits: the loss is the per-row kl, or sum_i weights_i kl_i
    when weights are given; kl is the per-row kl without gradient, for reporting."""
    chosen = _choose_backend(backend)
    _state.backend = chosen
    if chosen == "cpp":
        return kl_cpp(t2, s2, T, S, weights)
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


def _as_kernel_dtype(x: np.ndarray) -> np.ndarray:
    """Native float64 for 8-byte and wider floats, native float32 for the rest."""
    return x.astype(np.float64 if x.dtype.itemsize >= 8 else np.float32, copy=False)
