"""tfkd.ops.softmax_kl_mean: the weighted batch mean with the gradient rows
scaled inside the kernel's pass, against the float64 reference, on both
backends, with upstream gradients of 1 (no backward pass) and of anything else."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from softmax_kl_reference import softmax_kl_reference
from tfkd import ops
from tfkd.ops import kernel, softmax_kl_mean

BACKENDS = ["cpp", "tf"]


def mean_reference(t, s, T, S, w, scale):
    """(loss, d loss / d s) in float64."""
    kl, grad = softmax_kl_reference(t, s, T, S)
    n = max(1, kl.size)
    w = np.ones(kl.shape) if w is None else np.asarray(w, np.float64)
    return scale * np.sum(w * kl) / n, scale * (w / n)[..., None] * grad


def loss_and_grad(t, s, upstream=1.0, **kwargs):
    t, s = tf.constant(t), tf.constant(s)
    with tf.GradientTape() as tape:
        tape.watch(s)
        loss = softmax_kl_mean(t, s, **kwargs)
        outer = loss if upstream == 1.0 else upstream * loss
    return loss.numpy(), tape.gradient(outer, s).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (37, 18), (300, 4), (5, 7, 90), (33, 260)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("upstream", [1.0, -2.5])
def test_matches_reference(rng, backend, shape, weighted, upstream):
    t = rng.normal(0, 3, shape).astype(np.float32)
    s = rng.normal(0, 3, shape).astype(np.float32)
    w = rng.random(shape[:-1]).astype(np.float32) if weighted else None
    loss, grad = loss_and_grad(t, s, upstream, temperature=2.0, student_temperature=1.5,
                               sample_weight=w, scale=4.0, backend=backend)
    ref_loss, ref_grad = mean_reference(t, s, 2.0, 1.5, w, 4.0)
    assert ops.last_backend() == backend
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, upstream * ref_grad, rtol=2e-4,
                               atol=1e-6 * np.abs(ref_grad).max())


def test_same_as_per_example_mean(rng):
    t, s = (rng.normal(0, 3, (64, 6)).astype(np.float64) for _ in range(2))
    fused = softmax_kl_mean(t, s, 0.5, 1.0, scale=2.0, backend="cpp")
    plain = 2.0 * tf.reduce_mean(ops.softmax_kl(t, s, 0.5, 1.0, backend="cpp"))
    assert fused.dtype == tf.float64
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_tf_function_and_masked_actions(rng, backend):
    t = rng.normal(0, 3, (50, 9)).astype(np.float32)
    t[:, 3] = -np.inf
    s = rng.normal(0, 3, (50, 9)).astype(np.float32)
    s[:, 3] = -np.inf  # masked for both: adds nothing, gradient 0 there

    @tf.function
    def step(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = softmax_kl_mean(t, s, 1.0, backend=backend)
        return loss, tape.gradient(loss, s)

    loss, grad = step(tf.constant(t), tf.constant(s))
    ref_loss, ref_grad = mean_reference(t, s, 1.0, 1.0, None, 1.0)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=2e-5)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=2e-4, atol=1e-7)
    assert np.all(grad.numpy()[:, 3] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_is_zero(backend):
    loss, grad = loss_and_grad(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32),
                               backend=backend)
    assert loss == 0.0 and grad.shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_row_makes_the_loss_nan(rng, backend):
    t, s = (rng.normal(0, 1, (8, 5)).astype(np.float32) for _ in range(2))
    s[2, 1] = np.nan
    loss, grad = loss_and_grad(t, s, backend=backend)
    assert np.isnan(loss)
    assert np.all(np.isfinite(np.delete(grad, 2, axis=0)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_sample_weight_and_scale(backend):
    t = s = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="sample_weight"):
        softmax_kl_mean(t, s, sample_weight=np.ones(3, np.float32), backend=backend)
    with pytest.raises(ValueError, match="scale"):
        softmax_kl_mean(t, s, scale=float("nan"), backend=backend)
    with pytest.raises(ValueError, match="temperature"):
        softmax_kl_mean(t, s, temperature=0.0, backend=backend)


def test_op_checks_grad_scale_shape():
    t = tf.zeros([4, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="grad_scale"):
        kernel.op_library.tfkd_softmax_kl(t, t, 1.0, 1.0, tf.ones([5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="w must"):
        kernel.op_library.tfkd_scale_rows(t, tf.ones([3]))


def test_op_scalar_grad_scale_scales_every_row(rng):
    t, s = (tf.constant(rng.normal(0, 2, (20, 7)).astype(np.float32)) for _ in range(2))
    kl1, grad1 = kernel.op_library.tfkd_softmax_kl(t, s, 1.0, 1.0, 1.0)
    kl3, grad3 = kernel.op_library.tfkd_softmax_kl(t, s, 1.0, 1.0, 3.0)
    np.testing.assert_array_equal(kl1.numpy(), kl3.numpy())
    np.testing.assert_allclose(grad3.numpy(), 3 * grad1.numpy(), rtol=1e-5,
                               atol=1e-6 * np.abs(grad1.numpy()).max())
    unscaled = kernel.op_library.tfkd_scale_rows(grad1, 1.0)
    np.testing.assert_array_equal(unscaled.numpy(), grad1.numpy())


# The backward pass's chain rule, TfkdScaleRows: x * w[:, None], on the
# calling thread and the executor's helpers alike.

@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 3000), a=st.integers(1, 300),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_op_scale_rows_multiplies_each_row_by_its_weight(n, a, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, a)).astype(dtype)
    w = rng.normal(size=n).astype(dtype)
    expected = x * w[:, None]
    out = kernel.op_library.tfkd_scale_rows(x, w).numpy()
    assert out.dtype == dtype and out.shape == (n, a)
    np.testing.assert_array_equal(out, expected)
