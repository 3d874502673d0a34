"""The fused C++ kernel, through tfkd.ops.softmax_kl_numpy, against a float64
NumPy reference: kl = sum p (log p - log q), grad = (q - p) / S.

Everything here uses NumPy arrays only, so sanitize.sh can run this module
against an AddressSanitizer build of the extension.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from softmax_kl_reference import assert_matches_reference, softmax_kl_reference
from tfkd.ops import softmax_kl_numpy

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
THOROUGH = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

temperatures = st.one_of(st.sampled_from([0.01, 1.0, 100.0]),
                         st.floats(0.01, 100.0, allow_nan=False, allow_infinity=False))


@st.composite
def kl_problems(draw, max_elements):
    """Teacher/student logits [N, A] (N in 1..4096, A in 1..512, N*A capped),
    temperatures, dtype. Logits come from a seeded RNG, hypothesis picks their
    scale (up to 1e4), offset, masked fraction (teacher -inf, at least one
    action left per row) and whether the student is -inf where masked."""
    a = draw(st.one_of(st.integers(1, 8), st.integers(9, 64), st.integers(65, 512)))
    n = draw(st.one_of(st.integers(1, 40), st.integers(1, 4096)))
    n = max(1, min(n, max_elements // a))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def logits():
        scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3, 1e4]))
        offset = draw(st.sampled_from([0.0, 0.0, 1e2, -1e4, 1e4]))
        x = offset + scale * rng.standard_normal((n, a))
        return np.clip(x, -1e4, 1e4)

    t, s = logits(), logits()
    masked_fraction = draw(st.sampled_from([0.0, 0.0, 0.3, 0.95]))
    if masked_fraction:
        mask = rng.random((n, a)) < masked_fraction
        mask[np.arange(n), rng.integers(0, a, n)] = False
        t[mask] = -np.inf
        if draw(st.booleans()):
            s[mask] = -np.inf
    T = draw(temperatures)
    S = draw(st.one_of(st.none(), temperatures))
    return t.astype(dtype), s.astype(dtype), T, S


@given(kl_problems(max_elements=1 << 16))
@FAST
def test_kl_and_grad_match_the_float64_reference(problem):
    t, s, T, S = problem
    kl, grad = softmax_kl_numpy(t, s, T, S)
    assert kl.dtype == t.dtype and grad.dtype == t.dtype
    assert_matches_reference(kl, grad, t, s, T, S)


@pytest.mark.slow
@given(kl_problems(max_elements=4096 * 512))
@THOROUGH
def test_kl_and_grad_match_the_float64_reference_up_to_4096_by_512(problem):
    t, s, T, S = problem
    kl, grad = softmax_kl_numpy(t, s, T, S)
    assert_matches_reference(kl, grad, t, s, T, S)


@st.composite
def small_elementwise_problems(draw):
    """Every element drawn by hypothesis (so it can shrink to the worst one)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=80))
    width = 32 if dtype == np.float32 else 64
    elements = st.floats(-1e4, 1e4, width=width)
    t = draw(hnp.arrays(dtype, shape, elements=elements))
    s = draw(hnp.arrays(dtype, shape, elements=elements))
    mask = draw(hnp.arrays(np.bool_, shape))
    mask[np.arange(shape[0]), draw(hnp.arrays(np.int64, shape[0],
                                              elements=st.integers(0, shape[1] - 1)))] = False
    t[mask] = -np.inf
    return t, s, draw(temperatures), draw(st.one_of(st.none(), temperatures))


@given(small_elementwise_problems())
@FAST
def test_kl_and_grad_match_the_reference_for_arbitrary_small_arrays(problem):
    t, s, T, S = problem
    kl, grad = softmax_kl_numpy(t, s, T, S)
    assert_matches_reference(kl, grad, t, s, T, S)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_largest_shape_4096_by_512_matches_the_reference(rng, dtype):
    t = rng.normal(0, 30, (4096, 512))
    s = rng.normal(0, 30, (4096, 512))
    t[rng.random(t.shape) < 0.2] = -np.inf
    t[:, 0] = 1e4  # every row keeps an action; logits at the 1e4 limit
    t, s = t.astype(dtype), s.astype(dtype)
    kl, grad = softmax_kl_numpy(t, s, 3.0, 0.5)
    assert_matches_reference(kl, grad, t, s, 3.0, 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e2, 1e3, 1e4])
@pytest.mark.parametrize("T", [0.01, 1.0, 100.0])
def test_logits_up_to_1e4_give_finite_correct_results(rng, dtype, magnitude, T):
    t = (magnitude * rng.uniform(-1, 1, (64, 18))).astype(dtype)
    s = (magnitude * rng.uniform(-1, 1, (64, 18))).astype(dtype)
    t[:, 3], s[:, 5] = magnitude, -magnitude
    kl, grad = softmax_kl_numpy(t, s, T)
    assert np.isfinite(kl).all() and np.isfinite(grad).all()
    assert_matches_reference(kl, grad, t, s, T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a", [1, 7, 18, 64, 65, 300])
def test_identical_distributions_give_zero_kl_and_zero_grad(rng, dtype, a):
    t = (1e4 * rng.uniform(-1, 1, (33, a))).astype(dtype)
    kl, grad = softmax_kl_numpy(t, t, 0.01)
    assert_matches_reference(kl, grad, t, t, 0.01)
    # softmax(t/T) vs softmax(2t/2T): the same distribution, other scaling
    kl2, _ = softmax_kl_numpy(t, 2 * t, 1.0, 2.0)
    assert_matches_reference(kl2, _, t, 2 * t, 1.0, 2.0)


@pytest.mark.parametrize("a", [2, 18, 200])
def test_kl_is_nonnegative_and_zero_only_for_equal_distributions(rng, a):
    t = rng.normal(0, 3, (500, a))
    s = rng.normal(0, 3, (500, a))
    kl, _ = softmax_kl_numpy(t, s, 1.0)
    assert (kl > 0).all()
    kl_same, _ = softmax_kl_numpy(t, t + 5.0, 1.0)  # a constant shift is the same softmax
    np.testing.assert_allclose(kl_same, 0.0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a", [3, 18, 100])
def test_masked_actions_add_nothing_even_where_the_student_is_also_minus_inf(rng, dtype, a):
    t = rng.normal(0, 2, (40, a)).astype(dtype)
    s = rng.normal(0, 2, (40, a)).astype(dtype)
    masked = np.zeros((40, a), bool)
    masked[:, ::3] = True  # actions 0, 3, 6, ...
    t[masked] = -np.inf
    s_also = s.copy()
    s_also[masked] = -np.inf
    kept = ~masked[0]
    # Masked in both: the same as removing those actions.
    kl, grad = softmax_kl_numpy(t, s_also, 1.5)
    kl_removed, grad_removed = softmax_kl_numpy(t[:, kept], s[:, kept], 1.5)
    assert np.isfinite(kl).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(kl, kl_removed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad[:, kept], grad_removed, rtol=1e-5, atol=1e-6)
    assert (grad[:, masked[0]] == 0).all()
    assert_matches_reference(kl, grad, t, s_also, 1.5)
    # Masked in the teacher only: p = 0 there, the student's mass there still counts.
    kl, grad = softmax_kl_numpy(t, s, 1.5)
    assert np.isfinite(kl).all()
    assert_matches_reference(kl, grad, t, s, 1.5)


def test_a_single_unmasked_action_gives_kl_minus_log_q_of_it():
    t = np.array([[-np.inf, 2.0, -np.inf, -np.inf]] * 20)
    s = np.array([[0.0, 1.0, 2.0, 3.0]] * 20)
    kl, grad = softmax_kl_numpy(t, s, 1.0)
    log_q = s[0] - np.log(np.exp(s[0]).sum())
    np.testing.assert_allclose(kl, -log_q[1], rtol=1e-12)
    np.testing.assert_allclose(grad, np.tile(np.exp(log_q) - [0, 1, 0, 0], (20, 1)), atol=1e-12)


def test_student_minus_inf_where_the_teacher_has_mass_gives_infinite_kl():
    t = np.array([[0.0, 0.0, 0.0]] * 20)
    s = np.array([[0.0, 0.0, -np.inf]] * 20)
    kl, grad = softmax_kl_numpy(t, s, 1.0)
    assert np.isposinf(kl).all()
    np.testing.assert_allclose(grad, np.tile([1 / 6, 1 / 6, -1 / 3], (20, 1)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,S", [(0.01, 1.0), (1.0, 0.01), (5.0, 0.5), (100.0, 100.0)])
def test_teacher_and_student_temperatures_are_separate(rng, dtype, T, S):
    t = rng.normal(0, 1, (50, 18)).astype(dtype)
    s = rng.normal(0, 1, (50, 18)).astype(dtype)
    kl, grad = softmax_kl_numpy(t, s, T, S)
    assert_matches_reference(kl, grad, t, s, T, S)


def test_student_temperature_defaults_to_the_teacher_temperature(rng):
    t, s = rng.normal(size=(100, 18)), rng.normal(size=(100, 18))
    kl, grad = softmax_kl_numpy(t, s, 2.5)
    kl_explicit, grad_explicit = softmax_kl_numpy(t, s, 2.5, 2.5)
    np.testing.assert_array_equal(kl, kl_explicit)
    np.testing.assert_array_equal(grad, grad_explicit)


@pytest.mark.parametrize("shape", [(2, 3, 18), (4, 1, 2, 7), (5, 1)])
def test_leading_axes_are_batch_axes(rng, shape):
    t, s = rng.normal(size=shape), rng.normal(size=shape)
    kl, grad = softmax_kl_numpy(t, s, 1.3)
    assert kl.shape == shape[:-1] and grad.shape == shape
    flat_kl, flat_grad = softmax_kl_numpy(t.reshape(-1, shape[-1]), s.reshape(-1, shape[-1]), 1.3)
    np.testing.assert_array_equal(kl.ravel(), flat_kl)
    np.testing.assert_array_equal(grad.reshape(flat_grad.shape), flat_grad)


@pytest.mark.parametrize("a", [1, 5, 18, 40, 41, 64, 65, 512])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 33, 1000])
def test_every_row_is_computed_whatever_the_batch_and_action_counts(rng, n, a):
    # Row i is its own problem: results do not depend on a row's position
    # (SIMD tiles, blocks, thread chunks) or on its neighbours.
    t = rng.normal(0, 4, (n, a)).astype(np.float32)
    s = rng.normal(0, 4, (n, a)).astype(np.float32)
    kl, grad = softmax_kl_numpy(t, s, 0.7)
    assert_matches_reference(kl, grad, t, s, 0.7)
    for i in {0, n // 2, n - 1}:
        kl_i, grad_i = softmax_kl_numpy(t[i:i + 1], s[i:i + 1], 0.7)
        np.testing.assert_allclose(kl_i, kl[i:i + 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad_i, grad[i:i + 1], rtol=1e-5, atol=1e-7)


# --- dtypes and memory layouts: converted, never misread ----------------------

def test_float32_in_float32_out_and_float64_in_float64_out(rng):
    t, s = rng.normal(size=(30, 18)), rng.normal(size=(30, 18))
    kl32, grad32 = softmax_kl_numpy(t.astype(np.float32), s.astype(np.float32))
    kl64, grad64 = softmax_kl_numpy(t, s)
    assert kl32.dtype == grad32.dtype == np.float32
    assert kl64.dtype == grad64.dtype == np.float64
    assert_matches_reference(kl64, grad64, t, s, 1.0)
    assert_matches_reference(kl32, grad32, t.astype(np.float32), s.astype(np.float32), 1.0)


@pytest.mark.parametrize("t_dtype,s_dtype", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float32_and_float64_are_computed_in_float64(rng, t_dtype, s_dtype):
    t = rng.normal(0, 5, (40, 18)).astype(t_dtype)
    s = rng.normal(0, 5, (40, 18)).astype(s_dtype)
    kl, grad = softmax_kl_numpy(t, s, 0.3)
    assert kl.dtype == grad.dtype == np.float64
    assert_matches_reference(kl, grad, t, s, 0.3, dtype=np.float64)


def test_float16_is_computed_in_float32_and_returned_as_float16(rng):
    t = rng.normal(0, 3, (64, 18)).astype(np.float16)
    s = rng.normal(0, 3, (64, 18)).astype(np.float16)
    kl, grad = softmax_kl_numpy(t, s, 2.0)
    assert kl.dtype == grad.dtype == np.float16
    ref_kl, ref_grad = softmax_kl_reference(t, s, 2.0)
    np.testing.assert_allclose(kl, ref_kl, rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-3, atol=1e-3)


def test_bfloat16_is_computed_in_float32_and_returned_as_bfloat16(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = rng.normal(0, 3, (64, 18)).astype(ml_dtypes.bfloat16)
    s = rng.normal(0, 3, (64, 18)).astype(ml_dtypes.bfloat16)
    kl, grad = softmax_kl_numpy(t, s, 2.0)
    assert kl.dtype == grad.dtype == ml_dtypes.bfloat16
    ref_kl, ref_grad = softmax_kl_reference(t.astype(np.float64), s.astype(np.float64), 2.0)
    np.testing.assert_allclose(kl.astype(np.float64), ref_kl, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(grad.astype(np.float64), ref_grad, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["fortran", "every_other_column", "every_other_row",
                                    "reversed_rows", "transposed_view"])
def test_non_contiguous_arrays_give_the_results_of_their_contiguous_copies(rng, dtype, layout):
    base_t = rng.normal(0, 3, (120, 40)).astype(dtype)
    base_s = rng.normal(0, 3, (120, 40)).astype(dtype)
    view = {
        "fortran": np.asfortranarray,
        "every_other_column": lambda x: x[:, ::2],
        "every_other_row": lambda x: x[::2],
        "reversed_rows": lambda x: x[::-1],
        "transposed_view": lambda x: x.T,
    }[layout]
    t, s = view(base_t), view(base_s)
    assert not (t.flags.c_contiguous and s.flags.c_contiguous)
    kl, grad = softmax_kl_numpy(t, s, 1.7)
    kl_c, grad_c = softmax_kl_numpy(np.ascontiguousarray(t), np.ascontiguousarray(s), 1.7)
    np.testing.assert_array_equal(kl, kl_c)
    np.testing.assert_array_equal(grad, grad_c)
    assert_matches_reference(kl, grad, t, s, 1.7)


def test_a_contiguous_teacher_with_a_strided_student_is_not_misread(rng):
    t = rng.normal(0, 3, (64, 18))
    s_wide = rng.normal(0, 3, (64, 36))
    kl, grad = softmax_kl_numpy(t, s_wide[:, 1::2], 1.0)
    assert_matches_reference(kl, grad, t, s_wide[:, 1::2], 1.0)


@pytest.mark.parametrize("byte_order", [">", "<"])
def test_float64_in_either_byte_order_is_computed_in_float64(rng, byte_order):
    # A big-endian float64 array (read from a file, say) is still float64: it
    # must be converted to native float64, not computed in float32.
    t = rng.normal(0, 3, (32, 18))
    s = rng.normal(0, 3, (32, 18))
    kl, grad = softmax_kl_numpy(t.astype(byte_order + "f8"), s.astype(byte_order + "f8"), 0.9)
    kl_native, grad_native = softmax_kl_numpy(t, s, 0.9)
    assert kl.dtype == np.float64 and grad.dtype == np.float64, (
        f"{byte_order}f8 inputs gave {kl.dtype} results")
    np.testing.assert_array_equal(kl, kl_native)
    np.testing.assert_array_equal(grad, grad_native)


def test_python_lists_are_accepted_as_float64(rng):
    t, s = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    kl, grad = softmax_kl_numpy(t.tolist(), s.tolist(), 1.0)
    assert kl.dtype == np.float64
    assert_matches_reference(kl, grad, t, s, 1.0)


# The kernel is compiled once per instruction set (AVX-512, AVX2, SSE2) with
# tiles as wide as the vectors; TFKD_SIMD caps the choice at load time, so
# each copy is checked here whatever this machine's CPU: the loss through
# tfkd._C, the backward's row scaling through the TensorFlow op.
LOWER_ISA_CHECK = """
import numpy as np
from softmax_kl_reference import assert_matches_reference
from tfkd.ops import kernel

_C = kernel.require_extension()
assert _C.simd_level().startswith(EXPECTED), _C.simd_level()
rng = np.random.default_rng(7)
for dtype in (np.float32, np.float64):
    for n in (1, 3, 16, 17, 100):
        for a in (1, 4, 18, 33, 64, 65, 300):
            t = 3 * rng.standard_normal((n, a))
            s = 3 * rng.standard_normal((n, a))
            mask = rng.random((n, a)) < 0.3
            mask[:, 0] = False
            t[mask] = -np.inf
            t, s = t.astype(dtype), s.astype(dtype)
            kl, grad = _C.softmax_kl(t, s, 0.7, 1.3)
            assert_matches_reference(kl, grad, t, s, 0.7, 1.3)
            w = rng.random(n).astype(dtype)
            scaled = kernel.op_library.tfkd_scale_rows(grad, w).numpy()
            np.testing.assert_array_equal(scaled, grad * w[:, None])
    t = rng.standard_normal((40, 18)).astype(dtype)
    t[5, 3] = np.nan
    kl, grad = _C.softmax_kl(t, t, 1.0, 1.0)
    assert np.isnan(kl[5]) and np.isnan(grad[5]).all()
    assert np.isfinite(np.delete(kl, 5)).all()
print("ok")
"""


@pytest.mark.parametrize("cap, expected", [("x86-64-v3", ("x86-64-v3", "baseline")),
                                           ("baseline", ("baseline",))])
def test_the_lower_instruction_set_copies_match_the_reference(cap, expected):
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "TFKD_SIMD": cap,
           "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    script = f"EXPECTED = {expected!r}\n" + LOWER_ISA_CHECK
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
