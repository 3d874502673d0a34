"""tfkd.ops.softmax_kl, the TensorFlow API: backends "cpp", "tf" and "auto"
against the float64 reference, gradients, tf.function, model.fit, threads,
and the rule that the suite fails when the C++ extension is missing."""

import threading

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softmax_kl_reference import assert_matches_reference, softmax_kl_reference, tolerances
from tfkd import ops
from tfkd.ops import kernel_available, kernel_info, last_backend, softmax_kl, softmax_kl_numpy

BACKENDS = ["cpp", "tf", "auto"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def value_and_grad(t, s, T=1.0, S=None, backend="auto", upstream=None):
    """kl and d(sum(upstream * kl))/d s through tf.GradientTape."""
    t, s = tf.constant(t), tf.constant(s)
    with tf.GradientTape() as tape:
        tape.watch(s)
        kl = softmax_kl(t, s, T, S, backend=backend)
        loss = tf.reduce_sum(kl if upstream is None else kl * upstream)
    return kl, tape.gradient(loss, s)


def problem(rng, shape, dtype=np.float32, scale=3.0, masked=0.0):
    t = rng.normal(0, scale, shape)
    s = rng.normal(0, scale, shape)
    if masked:
        mask = rng.random(shape) < masked
        mask[..., 0] = False
        t[mask] = -np.inf
    return t.astype(dtype), s.astype(dtype)


# --- no silent fallback ------------------------------------------------------

def test_the_cpp_extension_and_the_op_library_are_built_and_load():
    assert kernel_available(), f"tfkd's kernel is missing: {kernel_info()['import_error']}"
    assert kernel_info()["simd"]
    assert kernel_info()["op_library"].endswith("_tf_ops.so")


@pytest.mark.parametrize("shape", [(4, 18), (4096, 18)])
def test_auto_uses_the_cpp_op_on_cpu_and_says_so(rng, shape):
    assert kernel_available(), f"tfkd's kernel is missing: {kernel_info()['import_error']}"
    t, s = problem(rng, shape)
    with tf.device("/CPU:0"):
        kl = softmax_kl(t, s, 2.0, backend="auto")
    assert last_backend() == "cpp"
    assert_matches_reference(kl.numpy(), softmax_kl_reference(t, s, 2.0)[1], t, s, 2.0)
    softmax_kl(t, s, backend="tf")
    assert last_backend() == "tf"


def test_the_cpp_backend_is_one_fused_tensorflow_op(rng):
    t, s = (tf.constant(x) for x in problem(rng, (64, 18)))

    @tf.function
    def loss_and_grad(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = tf.reduce_mean(softmax_kl(t, s, 2.0, backend="cpp"))
        return tape.gradient(loss, s)

    graph = loss_and_grad.get_concrete_function(t, s).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("TfkdSoftmaxKl") == 1 and types.count("TfkdScaleRows") == 1
    assert not any("PyFunc" in name for name in types)


# --- values and gradients ----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 18), (300, 65), (2, 3, 18), (4096, 18)])
def test_values_and_gradients_match_the_reference(rng, backend, dtype, shape):
    t, s = problem(rng, shape, dtype, masked=0.3)
    upstream = rng.uniform(0.5, 2.0, shape[:-1]).astype(dtype)
    kl, grad = value_and_grad(t, s, 0.5, 2.0, backend, upstream)
    assert isinstance(kl, tf.Tensor)
    assert kl.shape == shape[:-1] and kl.dtype == dtype and grad.dtype == dtype
    # d sum(w kl)/ds = w (q - p) / S: compare grad / w with (q - p) / S
    assert_matches_reference(kl.numpy(), grad.numpy() / upstream[..., None], t, s, 0.5, 2.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T,S", [(0.01, 1.0), (100.0, None), (1.0, 0.01)])
def test_large_logits_and_extreme_temperatures_match_the_reference(rng, backend, T, S):
    t, s = problem(rng, (64, 18), scale=1e4)
    t, s = np.clip(t, -1e4, 1e4), np.clip(s, -1e4, 1e4)
    kl, grad = value_and_grad(t, s, T, S, backend)
    assert np.isfinite(kl.numpy()).all() and np.isfinite(grad.numpy()).all()
    assert_matches_reference(kl.numpy(), grad.numpy(), t, s, T, S)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_actions_with_a_minus_inf_student_give_finite_values_and_gradients(rng, backend):
    t, s = problem(rng, (20, 6))
    t[:, 2:4] = -np.inf
    s[:, 2:4] = -np.inf
    kl, grad = value_and_grad(t, s, 1.0, None, backend)
    assert np.isfinite(kl.numpy()).all() and np.isfinite(grad.numpy()).all()
    assert_matches_reference(kl.numpy(), grad.numpy(), t, s, 1.0)
    assert (grad.numpy()[:, 2:4] == 0).all()


@given(seed=st.integers(0, 2**32 - 1),
       n=st.integers(1, 300), a=st.integers(1, 100),
       T=st.floats(0.01, 100), S=st.one_of(st.none(), st.floats(0.01, 100)),
       scale=st.sampled_from([0.1, 3.0, 100.0, 1e4]), masked=st.sampled_from([0.0, 0.5]))
@SETTINGS
def test_cpp_gradient_equals_tf_autodiff_of_the_tf_backend(seed, n, a, T, S, scale, masked):
    t, s = problem(np.random.default_rng(seed), (n, a), scale=scale, masked=masked)
    t, s = np.clip(t, -1e4, 1e4), np.clip(s, -1e4, 1e4)
    upstream = np.random.default_rng(seed + 1).uniform(0.5, 2, n).astype(np.float32)
    kl_cpp, grad_cpp = value_and_grad(t, s, T, S, "cpp", upstream)
    kl_tf, grad_tf = value_and_grad(t, s, T, S, "tf", upstream)
    # Both are float32 computations of the same formula: each within the
    # reference's float32 tolerance, so within twice it of each other.
    _, grad_atol = tolerances(t, s, T, S, np.float32)
    np.testing.assert_array_less(np.abs(grad_cpp.numpy() - grad_tf.numpy()),
                                 2 * grad_atol * upstream[:, None] + 1e-30)
    assert_matches_reference(kl_cpp.numpy(), grad_cpp.numpy() / upstream[:, None], t, s, T, S)
    assert_matches_reference(kl_tf.numpy(), grad_tf.numpy() / upstream[:, None], t, s, T, S)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_give_the_same_numbers(rng, backend):
    t, s = problem(rng, (5000, 18), masked=0.2)
    kl = softmax_kl(t, s, 1.5, 0.8, backend=backend).numpy()
    kl_numpy, _ = softmax_kl_numpy(t, s, 1.5, 0.8)
    np.testing.assert_allclose(kl, kl_numpy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gradient_flows_to_the_teacher_logits(rng, backend):
    t, s = problem(rng, (5000, 18))
    t, s = tf.constant(t), tf.constant(s)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([t, s])
        loss = tf.reduce_sum(softmax_kl(t, s, backend=backend))
    assert tape.gradient(loss, t) is None
    assert tape.gradient(loss, s) is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_variables_receive_the_gradient(rng, backend):
    t, s = problem(rng, (64, 18))
    student = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(softmax_kl(t, student, 2.0, backend=backend))
    _, ref_grad = softmax_kl_reference(t, s, 2.0)
    np.testing.assert_allclose(tape.gradient(loss, student).numpy(), ref_grad / 64, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_as_a_tensor_or_numpy_scalar(rng, backend):
    t, s = problem(rng, (32, 18))
    want, _ = softmax_kl_reference(t, s, 3.0, 0.5)
    for T, S in [(tf.constant(3.0), tf.constant(0.5)), (np.float32(3.0), np.float64(0.5)),
                 (tf.Variable(3.0), 0.5)]:
        kl = softmax_kl(t, s, T, S, backend=backend)
        np.testing.assert_allclose(kl.numpy(), want, rtol=1e-5, atol=1e-6)


# --- dtypes ------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_are_computed_in_float32_and_returned_in_their_dtype(
        rng, backend, dtype):
    t32, s32 = problem(rng, (5000, 18))
    t, s = tf.cast(t32, dtype), tf.cast(s32, dtype)
    with tf.GradientTape() as tape:
        tape.watch(s)
        kl = softmax_kl(t, s, 2.0, backend=backend)
        loss = tf.reduce_sum(kl)
    grad = tape.gradient(loss, s)
    assert kl.dtype == dtype and grad.dtype == dtype
    # reference on the rounded inputs; the output rounding is the only error
    ref_kl, ref_grad = softmax_kl_reference(tf.cast(t, tf.float64).numpy(),
                                            tf.cast(s, tf.float64).numpy(), 2.0)
    rtol = 1e-2 if dtype == tf.bfloat16 else 2e-3
    np.testing.assert_allclose(tf.cast(kl, tf.float64).numpy(), ref_kl, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(tf.cast(grad, tf.float64).numpy(), ref_grad, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t_dtype,s_dtype", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float32_and_float64_return_the_student_dtype(rng, backend, t_dtype, s_dtype):
    t, s = problem(rng, (5000, 18))
    kl = softmax_kl(t.astype(t_dtype), s.astype(s_dtype), 0.7, backend=backend)
    assert kl.dtype == s_dtype
    ref_kl, _ = softmax_kl_reference(t.astype(t_dtype), s.astype(s_dtype), 0.7)
    np.testing.assert_allclose(kl.numpy(), ref_kl, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_numpy_inputs_are_not_misread(rng, backend):
    t, s = problem(rng, (5000, 36))
    kl = softmax_kl(np.asfortranarray(t[:, ::2]), s[:, 1::2], backend=backend)
    ref_kl, _ = softmax_kl_reference(t[:, ::2], s[:, 1::2], 1.0)
    np.testing.assert_allclose(kl.numpy(), ref_kl, rtol=1e-5, atol=1e-6)


# --- tf.function, XLA, model.fit ---------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_tf_function_with_static_shapes(rng, backend):
    t, s = problem(rng, (5000, 18))

    @tf.function
    def loss_and_grad(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            kl = softmax_kl(t, s, 0.5, 1.5, backend=backend)
            loss = tf.reduce_sum(kl)
        return kl, tape.gradient(loss, s)

    kl, grad = loss_and_grad(tf.constant(t), tf.constant(s))
    assert_matches_reference(kl.numpy(), grad.numpy(), t, s, 0.5, 1.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_tf_function_with_unknown_batch_and_actions(rng, backend):
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([], tf.float32)])
    def loss_and_grad(t, s, T):
        with tf.GradientTape() as tape:
            tape.watch(s)
            kl = softmax_kl(t, s, T, backend=backend)
            loss = tf.reduce_sum(kl)
        return kl, tape.gradient(loss, s)

    with tf.device("/CPU:0"):  # "auto" picks TF ops on a GPU
        for shape in [(3, 5), (20000, 18), (1, 1), (0, 4)]:
            t, s = problem(rng, shape, masked=0.2)
            kl, grad = loss_and_grad(t, s, tf.constant(1.3))
            assert_matches_reference(kl.numpy(), grad.numpy(), t, s, 1.3)
    if backend == "auto":
        assert last_backend() == "cpp"


def test_under_xla_cpp_is_refused_and_auto_uses_tf_ops(rng):
    t, s = problem(rng, (5000, 18))
    with tf.device("/CPU:0"):
        auto = tf.function(lambda t, s: softmax_kl(t, s, backend="auto"), jit_compile=True)
        kl = auto(tf.constant(t), tf.constant(s))
        assert last_backend() == "tf"
        np.testing.assert_allclose(kl.numpy(), softmax_kl_reference(t, s)[0], rtol=1e-4, atol=1e-5)
        cpp = tf.function(lambda t, s: softmax_kl(t, s, backend="cpp"), jit_compile=True)
        with pytest.raises(ValueError, match="XLA"):
            cpp(tf.constant(t), tf.constant(s))


@pytest.mark.parametrize("backend", ["cpp", "tf"])
def test_a_keras_model_trained_with_this_loss_lowers_it(backend):
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(512, 8)).astype(np.float32)
    teacher_logits = 3 * np.tanh(observations @ rng.normal(size=(8, 6))).astype(np.float32)

    def distillation_loss(y_true, y_pred):
        return softmax_kl(y_true, y_pred, 2.0, backend=backend)

    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(6)])
    # jit_compile="auto" means XLA on a GPU, where "cpp" cannot run
    student.compile(optimizer=keras.optimizers.Adam(0.01), loss=distillation_loss,
                    jit_compile=False if backend == "cpp" else "auto")
    initial = student.evaluate(observations, teacher_logits, batch_size=512, verbose=0)
    student.fit(observations, teacher_logits, batch_size=128, epochs=15, verbose=0)
    final = student.evaluate(observations, teacher_logits, batch_size=512, verbose=0)
    assert np.isfinite(final) and final < 0.3 * initial
    want, _ = softmax_kl_reference(teacher_logits, student.predict(observations, verbose=0), 2.0)
    np.testing.assert_allclose(final, want.mean(), rtol=1e-4)


# --- threads -----------------------------------------------------------------

@pytest.mark.parametrize("entry", ["numpy", "cpp", "auto"])
def test_concurrent_calls_from_threads_equal_single_threaded_results(entry):
    rng = np.random.default_rng(7)
    # sizes on both sides of the kernel's own multi-threading threshold
    shapes = [(7, 3), (20000, 6), (5000, 18), (1000, 64), (300, 65), (200, 512)]
    problems = [problem(rng, shape, masked=0.2) + (float(T),)
                for shape, T in zip(shapes, rng.uniform(0.1, 10, len(shapes)))]

    def compute(t, s, T):
        if entry == "numpy":
            return softmax_kl_numpy(t, s, T)
        kl, grad = value_and_grad(t, s, T, None, entry)
        return kl.numpy(), grad.numpy()

    expected = [compute(*p) for p in problems]
    results, errors = {}, []

    def worker(k):
        try:
            for repeat in range(2):
                for i in range(k, k + len(problems)):
                    i %= len(problems)
                    results[k, repeat, i] = compute(*problems[i])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 4 * 2 * len(problems)
    for (_, _, i), (kl, grad) in results.items():
        np.testing.assert_array_equal(kl, expected[i][0])
        np.testing.assert_array_equal(grad, expected[i][1])


def test_last_backend_is_per_thread(rng):
    t_big, s_big = problem(rng, (5000, 18))
    seen = {}

    def worker(name, backend):
        softmax_kl(t_big, s_big, backend=backend)
        seen[name] = last_backend()

    threads = [threading.Thread(target=worker, args=(b, b)) for b in ("cpp", "tf")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"cpp": "cpp", "tf": "tf"}


def test_the_public_api_is_exported():
    import tfkd.ops

    for name in ["softmax_kl", "softmax_kl_numpy", "kernel_available", "last_backend"]:
        assert name in tfkd.ops.__all__ and callable(getattr(ops, name))
