"""Bad input to softmax_kl in every entry point (the NumPy kernel entry and
the "cpp", "tf", "auto" backends): a ValueError that names the problem, or
tf.errors.InvalidArgumentError when only a running graph can see it. NaN
rows stay NaN, never a crash or a wrong value elsewhere; empty batches give
empty results."""

import numpy as np
import pytest
import tensorflow as tf

from softmax_kl_reference import assert_matches_reference
from tfkd.ops import kernel, softmax_kl, softmax_kl_numpy

ENTRIES = ["numpy", "cpp", "tf", "auto"]
BACKENDS = ["cpp", "tf", "auto"]


def call(entry, t, s, temperature=1.0, student_temperature=None):
    """(kl, grad) as NumPy arrays from one entry point."""
    if entry == "numpy":
        return softmax_kl_numpy(t, s, temperature, student_temperature)
    s = tf.convert_to_tensor(s)
    with tf.GradientTape() as tape:
        tape.watch(s)
        kl = softmax_kl(t, s, temperature, student_temperature, backend=entry)
        loss = tf.reduce_sum(kl)
    grad = tape.gradient(loss, s)
    return kl.numpy(), None if grad is None else grad.numpy()


def logits(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)


# --- shapes ------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("t_shape,s_shape", [((4, 5), (4, 6)), ((4, 5), (3, 5)),
                                             ((4, 5), (4, 5, 1)), ((2, 3, 5), (3, 2, 5))])
def test_mismatched_shapes_are_a_value_error_naming_both_shapes(entry, t_shape, s_shape):
    t, s = np.zeros(t_shape, np.float32), np.zeros(s_shape, np.float32)
    pattern = r"differ in shape.*{}.*{}".format(*(
        r"\[" + r",\s*".join(map(str, shape)) + r"\]" for shape in (t_shape, s_shape)))
    with pytest.raises(ValueError, match=pattern):
        call(entry, t, s)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("shape", [(4, 0), (0, 0), (2, 3, 0)])
def test_an_empty_action_axis_is_a_value_error(entry, shape):
    with pytest.raises(ValueError, match="at least one action"):
        call(entry, np.zeros(shape, np.float32), np.zeros(shape, np.float32))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("shape", [(5,), ()])
def test_logits_of_rank_below_2_are_a_value_error(entry, shape):
    with pytest.raises(ValueError, match="rank >= 2"):
        call(entry, np.zeros(shape, np.float32), np.zeros(shape, np.float32))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 18), (2, 0, 4)])
def test_an_empty_batch_gives_an_empty_result(entry, shape):
    kl, grad = call(entry, np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    assert kl.shape == shape[:-1]
    assert grad.shape == shape


# --- dtypes ------------------------------------------------------------------

NON_FLOATS = [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("dtype", NON_FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("which", ["teacher", "student"])
def test_non_float_logits_are_a_value_error_naming_the_argument(entry, dtype, which):
    t, s = logits((4, 5))
    if which in ("teacher", "both"):
        t = np.ones((4, 5), dtype)
    if which in ("student", "both"):
        s = np.ones((4, 5), dtype)
    name = "student_logits" if which == "student" else "teacher_logits"
    with pytest.raises(ValueError, match=f"{name} must be a floating-point .*{np.dtype(dtype).name}"):
        call(entry, t, s)


@pytest.mark.parametrize("entry", ENTRIES)
def test_string_logits_are_a_value_error(entry):
    with pytest.raises(ValueError, match="floating-point"):
        call(entry, np.array([["a", "b"]]), np.array([["c", "d"]]))


# --- temperatures ------------------------------------------------------------

# 1e-39 is a subnormal float32 and 1e-50 is 0 in float32: 1 / T overflows.
# 1e39 is infinite in float32.
BAD_TEMPERATURES = [0.0, -0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-39, 1e-50,
                    1e39]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value", BAD_TEMPERATURES)
def test_a_bad_teacher_temperature_is_a_value_error(entry, value):
    t, s = logits((4, 5))
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        call(entry, t, s, value)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value", BAD_TEMPERATURES)
def test_a_bad_student_temperature_is_a_value_error_naming_it(entry, value):
    t, s = logits((4, 5))
    with pytest.raises(ValueError, match="student_temperature must be finite and > 0"):
        call(entry, t, s, 1.0, value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [1e-39, 1e39])
def test_a_temperature_outside_float32s_normal_range_is_the_same_error_everywhere(dtype, value):
    # float64 logits too: one rule for every dtype and backend.
    t, s = logits((4, 5), dtype)
    messages = set()
    for entry in ENTRIES:
        with pytest.raises(ValueError) as error:
            call(entry, t, s, value)
        messages.add(str(error.value))
    assert len(messages) == 1, messages
    assert "\n" not in messages.pop()


@pytest.mark.parametrize("value", [1e-39, 1e39, float("nan")])
def test_the_kernels_own_entries_apply_the_same_temperature_rule(value):
    t, s = logits((4, 5))
    with pytest.raises(ValueError, match="student_temperature must be finite and > 0, a normal"):
        kernel.require_extension().softmax_kl(t, s, 1.0, value)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be finite and > 0"):
        kernel.op_library.tfkd_softmax_kl(t, s, value, 1.0, 1.0)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value", [1.2e-38, 1e-30, 3e38])
def test_a_temperature_inside_float32s_normal_range_is_accepted(entry, value):
    t, s = logits((4, 5))
    kl, _ = call(entry, t, s, value)
    assert kl.shape == (4,)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value", ["2", True, None, [1.0, 2.0]], ids=repr)
def test_a_temperature_that_is_not_a_real_scalar_is_a_value_error(entry, value):
    t, s = logits((4, 5))
    with pytest.raises(ValueError, match="temperature"):
        call(entry, t, s, value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_an_eager_tensor_temperature_is_checked(backend, value):
    t, s = logits((4, 5))
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        softmax_kl(t, s, tf.constant(value), backend=backend)


def test_an_unknown_backend_is_a_value_error():
    t, s = logits((4, 5))
    with pytest.raises(ValueError, match="backend must be one of"):
        softmax_kl(t, s, backend="cuda")


# --- undefined rows: NaN, +inf, all -inf --------------------------------------

def _make_undefined(case, t, s, rows):
    """Puts into `rows` what leaves their KL undefined."""
    a = t.shape[-1]
    if case == "teacher NaN":
        t[rows, a - 1] = np.nan
    elif case == "student NaN":
        s[rows, 0] = np.nan
    elif case == "teacher NaN in the first column":
        t[rows, 0] = np.nan
    elif case == "teacher +inf":
        t[rows, a - 1] = np.inf
    elif case == "student +inf":
        s[rows, 0] = np.inf
    elif case == "teacher all -inf":
        t[rows] = -np.inf
    elif case == "student all -inf":
        s[rows] = -np.inf


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("case", ["teacher NaN", "student NaN", "teacher NaN in the first column",
                                  "teacher +inf", "student +inf", "teacher all -inf",
                                  "student all -inf"])
@pytest.mark.parametrize("n,a", [(5, 4), (5000, 18), (100, 300)])
def test_an_undefined_row_gives_nan_for_that_row_only(entry, case, n, a):
    t, s = logits((n, a), seed=n + a)
    t[:, 1] = -np.inf  # masked actions elsewhere must not disturb this
    s[:, 1] = -np.inf  # nor a student that is -inf where the teacher is masked
    bad = [0, n // 2, n - 1]
    _make_undefined(case, t, s, bad)
    kl, grad = call(entry, t, s, 0.8)
    good = np.setdiff1d(np.arange(n), bad)
    assert np.isnan(kl[bad]).all(), f"{case} in rows {bad} gave kl {kl[bad]}"
    assert np.isnan(grad[bad]).any(axis=-1).all()
    assert_matches_reference(kl[good], grad[good], t[good], s[good], 0.8)


# --- errors only a running graph can see ---------------------------------------

def dynamic_graph(backend):
    spec = tf.TensorSpec([None, None], tf.float32)
    scalar = tf.TensorSpec([], tf.float32)

    @tf.function(input_signature=[spec, spec, scalar, scalar])
    def kl(t, s, temperature, student_temperature):
        return softmax_kl(t, s, temperature, student_temperature, backend=backend)

    return kl


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t_shape,s_shape", [((4, 5), (4, 6)), ((4, 5), (3, 5)),
                                             ((20000, 5), (20000, 6))])
def test_in_a_graph_mismatched_shapes_are_invalid_argument_naming_the_shapes(
        backend, t_shape, s_shape):
    kl = dynamic_graph(backend)
    pattern = r"differ in shape(.|\n)*{} {}(.|\n)*{} {}".format(*t_shape, *s_shape)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        kl(np.zeros(t_shape, np.float32), np.zeros(s_shape, np.float32), 1.0, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_a_graph_an_empty_action_axis_is_invalid_argument(backend):
    kl = dynamic_graph(backend)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one action"):
        kl(np.zeros((4, 0), np.float32), np.zeros((4, 0), np.float32), 1.0, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [0.0, -2.0, float("nan"), float("inf"), 1e-39])
@pytest.mark.parametrize("which", ["temperature", "student_temperature"])
def test_in_a_graph_a_bad_temperature_tensor_is_invalid_argument(backend, value, which):
    kl = dynamic_graph(backend)
    t, s = logits((20000, 5))  # large enough that "auto" runs the kernel
    temperatures = (value, 1.0) if which == "temperature" else (1.0, value)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{which} must be finite and > 0"):
        kl(t, s, *temperatures)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_a_graph_an_empty_batch_gives_an_empty_result(backend):
    kl = dynamic_graph(backend)
    out = kl(np.zeros((0, 5), np.float32), np.zeros((0, 5), np.float32), 1.0, 1.0)
    assert out.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_a_graph_a_nan_gives_nan_for_its_row_only(backend):
    kl = dynamic_graph(backend)
    t, s = logits((20000, 5))
    t[7, 2] = np.nan
    out = kl(t, s, 1.0, 1.0).numpy()
    assert np.isnan(out[7]) and np.isfinite(np.delete(out, 7)).all()


def unknown_rank_graph(backend):
    spec = tf.TensorSpec(None, tf.float32)
    return tf.function(lambda t, s: softmax_kl(t, s, backend=backend), input_signature=[spec, spec])


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_a_graph_of_unknown_rank_rank_1_logits_are_invalid_argument(backend):
    kl = unknown_rank_graph(backend)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank >= 2"):
        kl(np.zeros(5, np.float32), np.zeros(5, np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_a_graph_of_unknown_rank_different_ranks_are_invalid_argument_naming_it(backend):
    kl = unknown_rank_graph(backend)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in shape"):
        kl(np.zeros((4, 5), np.float32), np.zeros((4, 5, 1), np.float32))
