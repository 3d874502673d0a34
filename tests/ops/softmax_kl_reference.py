"""A float64 NumPy reference for tfkd.ops.softmax_kl, and the tolerance to
compare a float32 / float64 result with it.

    p = softmax(t / T),  q = softmax(s / S)
    kl   = sum_a p_a (log p_a - log q_a)      (0 log 0 = 0 where p_a = 0)
    grad = d kl / d s = (q - p) / S
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis with max subtraction; -inf stays -inf."""
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def softmax_kl_reference(teacher_logits, student_logits, temperature=1.0,
                         student_temperature=None):
    """(kl, grad) in float64 for logits of shape [..., A]."""
    S = temperature if student_temperature is None else student_temperature
    u = np.asarray(teacher_logits, np.float64) / float(temperature)
    v = np.asarray(student_logits, np.float64) / float(S)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_p, log_q = log_softmax(u), log_softmax(v)
        p, q = np.exp(log_p), np.exp(log_q)
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)  # 0 log 0 = 0
    terms = np.where(np.isnan(p), np.nan, terms)  # NaN rows stay NaN
    return terms.sum(axis=-1), (q - p) / float(S)


def tolerances(teacher_logits, student_logits, temperature, student_temperature, dtype):
    """Per-row atol for kl and per-element atol for grad of a `dtype` result.

    A kernel working in `dtype` rounds each scaled logit t/T, s/S with an
    error delta ~ eps * (1 + |largest scaled logit| of its row), and sums
    A terms. First-order perturbation of the formulas above gives

        |d kl|     <= delta * (2 + E_p|d - kl|) + sqrt(A) * eps * E_p|d|
        |d grad_a| <= (delta + sqrt(A) eps) * (p_a + q_a) / S

    with d = log p - log q. The constant C covers a few roundings per step
    (including the reference's own float64 rounding); an algorithmic error
    (a wrong max, a lost mask, a wrong row) is far larger than this.
    """
    C = 8.0
    eps = float(np.finfo(dtype).eps)
    S = temperature if student_temperature is None else student_temperature
    u = np.asarray(teacher_logits, np.float64) / float(temperature)
    v = np.asarray(student_logits, np.float64) / float(S)
    A = u.shape[-1]
    finite_max = lambda x: np.max(np.where(np.isfinite(x), np.abs(x), 0.0), axis=-1)  # noqa: E731
    delta = eps * (1.0 + finite_max(u) + finite_max(v))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_p, log_q = log_softmax(u), log_softmax(v)
        p, q = np.exp(log_p), np.exp(log_q)
        d = np.where(p > 0, log_p - log_q, 0.0)
        kl = np.sum(p * d, axis=-1, keepdims=True)
        spread = np.sum(p * np.abs(d - kl), axis=-1)
        size = np.sum(p * np.abs(d), axis=-1)
    kl_atol = C * (delta * (2.0 + spread) + np.sqrt(A) * eps * size)
    # Values below the smallest normal number (exp terms, or (q - p) / S
    # itself) may flush to 0: TensorFlow runs with flush-to-zero.
    tiny = float(np.finfo(dtype).tiny)
    grad_atol = (C * (delta + np.sqrt(A) * eps)[..., None] * (p + q) / float(S)
                 + 4 * tiny * (1.0 + 1.0 / float(S)))
    return kl_atol, grad_atol


def assert_matches_reference(kl, grad, t, s, T, S=None, dtype=None):
    """kl and grad equal the float64 reference within `dtype`'s tolerance."""
    dtype = np.dtype(dtype or kl.dtype)
    ref_kl, ref_grad = softmax_kl_reference(t, s, T, S)
    kl_atol, grad_atol = tolerances(t, s, T, S, dtype)
    kl64, grad64 = np.asarray(kl, np.float64), np.asarray(grad, np.float64)
    assert kl64.shape == ref_kl.shape and grad64.shape == ref_grad.shape
    kl_err = np.abs(kl64 - ref_kl)
    bad = ~(kl_err <= kl_atol)
    assert not bad.any(), (
        f"kl differs from the float64 reference in {bad.sum()} rows; worst row "
        f"{np.unravel_index(np.argmax(np.where(bad, kl_err / kl_atol, 0)), bad.shape)}: "
        f"got {kl64[bad][:3]}, want {ref_kl[bad][:3]}, atol {kl_atol[bad][:3]}")
    grad_err = np.abs(grad64 - ref_grad)
    bad = ~(grad_err <= grad_atol)
    assert not bad.any(), (
        f"grad differs from (q - p) / S in {bad.sum()} entries: got {grad64[bad][:3]}, "
        f"want {ref_grad[bad][:3]}, atol {grad_atol[bad][:3]}")
