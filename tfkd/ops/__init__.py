"""Numerical ops: the fused softmax-KL and its backends."""

from tfkd.ops.softmax_kl import (
    BACKENDS,
    kernel_available,
    kernel_info,
    last_backend,
    softmax_kl,
    softmax_kl_mean,
    softmax_kl_numpy,
)

__all__ = [
    "BACKENDS",
    "kernel_available",
    "kernel_info",
    "last_backend",
    "softmax_kl",
    "softmax_kl_mean",
    "softmax_kl_numpy",
]
