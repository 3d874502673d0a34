"""tfkd's C++ kernel: loading it, and the "cpp" backend's custom gradient.

Two builds of the kernel in ``csrc/``: the Python extension ``tfkd._C`` (the
NumPy entry, ``softmax_kl_numpy``) and the TensorFlow op library
``tfkd/_tf_ops.so``, whose op ``TfkdSoftmaxKl`` returns the loss and its
gradient in one pass and ``TfkdScaleRows`` applies the backward's chain
rule. A missing build is not an error here: ``kernel_info()`` says why it is
missing, the "cpp" backend refuses to run, and the tests fail.
"""

from __future__ import annotations

import os

import tensorflow as tf

try:
    from tfkd import _C as extension
except ImportError as _error:
    extension = None
    _EXTENSION_ERROR: str | None = str(_error)
else:
    _EXTENSION_ERROR = None

OP_LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "_tf_ops.so")
try:
    op_library = tf.load_op_library(OP_LIBRARY)
except (tf.errors.NotFoundError, OSError) as _error:
    op_library = None
    _OP_LIBRARY_ERROR: str | None = f"{OP_LIBRARY}: {_error}"
else:
    _OP_LIBRARY_ERROR = None


def kernel_available() -> bool:
    """Whether the C++ kernel is built: ``tfkd._C`` imports and the op library loads."""
    return extension is not None and op_library is not None


def kernel_info() -> dict:
    """The C++ kernel's status: availability, SIMD level, why it is missing.

    The SIMD level is the instruction set the kernel chose for this CPU when
    it was loaded; the environment variable ``TFKD_SIMD`` ("x86-64-v3" or
    "baseline"), read at that moment, caps it.
    """
    errors = [e for e in (_EXTENSION_ERROR, _OP_LIBRARY_ERROR) if e]
    return {
        "available": kernel_available(),
        "simd": extension.simd_level() if extension is not None else None,
        "op_library": OP_LIBRARY if op_library is not None else None,
        "import_error": "; ".join(errors) or None,
    }


def require_extension():
    """The ``tfkd._C`` module.

    Raises:
        RuntimeError: the extension is not built.
    """
    if extension is None:
        raise RuntimeError(f"tfkd's C++ extension is not available: {_EXTENSION_ERROR}")
    return extension


def kl_cpp(t, s, T, S, weights=None):
    """The C++ kernel on 2-D logits: loss and gradient in one pass; the
    gradient is reused by the backward.

    Returns:
        (loss, kl): the loss is the per-row kl, or sum_i weights_i kl_i when
        row weights are given, the kernel scaling gradient row i by
        weights_i as it writes it, so an upstream gradient of 1 costs
        nothing more; kl is the per-row kl without gradient.
    """

    @tf.custom_gradient
    def loss_of_student(s):
        with tf.device("/CPU:0"):  # the op has CPU kernels only
            grad_scale = tf.ones([], s.dtype) if weights is None else weights
            kl, grad = op_library.tfkd_softmax_kl(t, s, T, S, grad_scale)
            loss = kl if weights is None else tf.reduce_sum(weights * kl)

        def backward(upstream, _):  # kl's own upstream is unused: it leaves through stop_gradient
            with tf.device("/CPU:0"):  # per row, or a scalar; for 1, TfkdScaleRows returns grad
                return op_library.tfkd_scale_rows(grad, tf.cast(upstream, grad.dtype))

        return (loss, kl), backward

    loss, kl = loss_of_student(s)
    return loss, tf.stop_gradient(kl)
