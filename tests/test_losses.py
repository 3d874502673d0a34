import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfkd import losses
from tfkd.ops import kernel_available

BACKENDS = ["tf", "cpp"]


def test_kernel_is_built():
    assert kernel_available(), "tfkd's C++ extension should be built for these tests"


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl_reference(t, s, teacher_temperature, student_temperature):
    log_p = log_softmax(t / teacher_temperature)
    log_q = log_softmax(s / student_temperature)
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(33, 6)) * 3, rng.normal(size=(33, 6)) * 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("squared", [True, False])
def test_soft_target_kl_matches_float64_reference(logits, backend, temperature, squared):
    t, s = logits
    got = losses.soft_target_kl(t.astype("float32"), s.astype("float32"), temperature,
                                scale_by_temperature_squared=squared, backend=backend)
    want = kl_reference(t, s, temperature, temperature) * (temperature ** 2 if squared else 1)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_q_value_kl_sharpens_only_the_teacher(logits, backend):
    t, s = logits
    got = losses.q_value_kl(t, s, temperature=0.01, backend=backend)
    np.testing.assert_allclose(got.numpy(), kl_reference(t, s, 0.01, 1.0), rtol=1e-6, atol=1e-9)


def test_greedy_action_nll_and_mse_match_reference(logits):
    t, s = logits
    nll = -log_softmax(s)[np.arange(len(t)), t.argmax(-1)]
    np.testing.assert_allclose(losses.greedy_action_nll(t, s).numpy(), nll, rtol=1e-10)
    np.testing.assert_allclose(losses.logits_mse(t, s).numpy(), ((s - t) ** 2).mean(-1),
                               rtol=1e-10)


def test_centered_mse_matches_reference_and_is_the_kl_at_high_temperature(logits):
    t, s = logits
    centered = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
    np.testing.assert_allclose(losses.centered_logits_mse(t, s).numpy(),
                               (centered ** 2).mean(-1), rtol=1e-10)
    # Hinton et al. 2015, §2.1: 2T² KL(T) -> the centred MSE; the gap shrinks like 1/T.
    gaps = [np.abs(2 * kl_reference(t, s, temperature, temperature) * temperature ** 2
                   / (centered ** 2).mean(-1) - 1).max() for temperature in (1e2, 1e3)]
    assert gaps[1] < 0.02 and gaps[1] < gaps[0] / 5
    np.testing.assert_allclose(losses.centered_logits_mse(t, t + 3.0).numpy(), 0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["soft_target_kl", "q_value_kl", "greedy_action_nll",
                                "logits_mse", "centered_logits_mse"])
def test_gradients_match_autodiff_of_the_formula(logits, fn, backend):
    t, s = (tf.constant(a) for a in logits)
    temperature = 0.01 if fn == "q_value_kl" else 3.0
    formulas = {
        "soft_target_kl": lambda s: temperature ** 2 * tf.reduce_sum(
            tf.nn.softmax(t / temperature) * (tf.nn.log_softmax(t / temperature)
                                             - tf.nn.log_softmax(s / temperature)), -1),
        "q_value_kl": lambda s: tf.reduce_sum(
            tf.nn.softmax(t / temperature) * (tf.nn.log_softmax(t / temperature)
                                             - tf.nn.log_softmax(s)), -1),
        "greedy_action_nll": lambda s: -tf.gather(tf.nn.log_softmax(s), tf.argmax(t, -1),
                                                  batch_dims=1),
        "logits_mse": lambda s: tf.reduce_mean(tf.square(s - t), -1),
        "centered_logits_mse": lambda s: tf.reduce_mean(tf.square(
            s - tf.reduce_mean(s, -1, keepdims=True) - t + tf.reduce_mean(t, -1, keepdims=True)),
            -1),
    }
    kwargs = {"temperature": temperature, "backend": backend} if "kl" in fn else {}
    weights = tf.constant(np.random.default_rng(1).uniform(size=t.shape[0]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([s, t])
        ours = tf.reduce_sum(weights * getattr(losses, fn)(t, s, **kwargs))
        reference = tf.reduce_sum(weights * formulas[fn](s))
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-9)
    np.testing.assert_allclose(tape.gradient(ours, s).numpy(), tape.gradient(reference, s).numpy(),
                               rtol=1e-7, atol=1e-12)
    assert tape.gradient(ours, t) is None  # the teacher is a constant


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss, fn", [
    (losses.SoftTargetKL(3.0), lambda t, s, b: losses.soft_target_kl(t, s, 3.0, backend=b)),
    (losses.SoftTargetKL(3.0, False),
     lambda t, s, b: losses.soft_target_kl(t, s, 3.0, False, backend=b)),
    (losses.QValueKL(0.05), lambda t, s, b: losses.q_value_kl(t, s, 0.05, backend=b))])
@pytest.mark.parametrize("shape", [(33, 6), (5, 4, 7)])
def test_batch_mean_is_the_weighted_mean_of_the_loss(loss, fn, backend, shape):
    """The Distiller's fused path: value, per-example values and gradient as the loss function's."""
    rng = np.random.default_rng(2)
    t, s = (tf.constant(rng.normal(size=shape) * 3) for _ in range(2))
    weights = tf.constant(rng.uniform(size=shape[:-1]))
    loss = losses.get(loss).__class__.from_config({**loss.get_config(), "backend": backend})
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(s)
        mean, values = loss.batch_mean(t, s, sample_weight=weights, scale=0.7)
        per_example = fn(t, s, backend)
        reference = 0.7 * tf.reduce_mean(weights * per_example)
    np.testing.assert_allclose(mean.numpy(), reference.numpy(), rtol=1e-9)
    np.testing.assert_allclose(values.numpy(), per_example.numpy(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(tape.gradient(mean, s).numpy(),
                               tape.gradient(reference, s).numpy(), rtol=1e-7, atol=1e-14)
    assert tape.gradient(values, s) is None  # the per-example values are for reporting


def test_feature_distance_matches_reference():
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 3, 4))
    tf_, sf = t.reshape(5, -1), s.reshape(5, -1)
    cos = (tf_ * sf).sum(-1) / np.linalg.norm(tf_, axis=-1) / np.linalg.norm(sf, axis=-1)
    np.testing.assert_allclose(losses.feature_distance(t, s, "mse").numpy(),
                               ((sf - tf_) ** 2).mean(-1), rtol=1e-10)
    np.testing.assert_allclose(losses.feature_distance(t, s, "l2").numpy(),
                               np.linalg.norm(sf - tf_, axis=-1), rtol=1e-10)
    np.testing.assert_allclose(losses.feature_distance(t, s, "cosine").numpy(), 1 - cos,
                               rtol=1e-10)
    with pytest.raises(ValueError, match="distance"):
        losses.feature_distance(t, s, "l1")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(2, 9), st.floats(0.1, 10.0), st.integers(0, 2 ** 31))
def test_kl_is_nonnegative_and_zero_for_equal_logits(batch, actions, temperature, seed):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(batch, actions)).astype("float32") * 5
    s = rng.normal(size=(batch, actions)).astype("float32") * 5
    assert (losses.soft_target_kl(t, s, temperature, backend="cpp").numpy() >= -1e-5).all()
    np.testing.assert_allclose(losses.soft_target_kl(t, t, temperature, backend="cpp"), 0,
                               atol=1e-4)


LOSS_OBJECTS = [
    lambda: losses.SoftTargetKL(temperature=2.5, scale_by_temperature_squared=False,
                                backend="tf"),
    lambda: losses.QValueKL(temperature=0.05),
    losses.GreedyActionNLL,
    losses.LogitsMSE,
]


@pytest.mark.parametrize("make", LOSS_OBJECTS)
def test_loss_objects_reduce_weight_and_serialise(logits, make):
    t, s = (a.astype("float32") for a in logits)
    loss = make()
    per_example = loss.call(t, s).numpy()
    weights = np.random.default_rng(3).uniform(size=len(t)).astype("float32")
    np.testing.assert_allclose(float(loss(t, s)), per_example.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss(t, s, sample_weight=weights)),
                               (per_example * weights).mean(), rtol=1e-5)
    for clone in (type(loss).from_config(loss.get_config()),
                  keras.losses.deserialize(keras.losses.serialize(loss))):
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
        np.testing.assert_allclose(float(clone(t, s)), float(loss(t, s)), rtol=1e-6)


def test_loss_objects_work_in_plain_compile():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 4)).astype("float32")
    teacher_logits = (x @ rng.normal(size=(4, 3)) * 3).astype("float32")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student.compile(keras.optimizers.Adam(0.05), losses.SoftTargetKL(temperature=2.0))
    history = student.fit(x, teacher_logits, epochs=15, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


@pytest.mark.parametrize("make", [lambda t: losses.SoftTargetKL(temperature=t),
                                  lambda t: losses.QValueKL(temperature=t)])
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), "2"])
def test_bad_temperature_is_rejected(make, temperature):
    with pytest.raises(ValueError, match="temperature"):
        make(temperature)


def test_get_resolves_names_and_rejects_bad_ones():
    assert isinstance(losses.get(None), losses.SoftTargetKL)
    kl = losses.get("q_value_kl", temperature=0.1, backend="tf")
    assert (kl.temperature, kl.backend) == (0.1, "tf")
    with pytest.raises(ValueError, match="unknown distillation loss 'soft_kl'"):
        losses.get("soft_kl")
    for name in ("kld", "KLD", "kl_divergence", "kullback_leibler_divergence"):
        with pytest.raises(ValueError, match=f"'{name}' is Keras' KL on probabilities.*"
                                             f"tfkd.losses.SoftTargetKL"):
            losses.get(name)
    for loss in (keras.losses.kl_divergence, keras.losses.KLDivergence(),
                 keras.losses.categorical_crossentropy, keras.losses.CategoricalCrossentropy()):
        with pytest.raises(ValueError, match="expects probabilities.*SoftTargetKL"):
            losses.get(loss)
    logits_ce = keras.losses.CategoricalCrossentropy(from_logits=True)
    assert losses.get(logits_ce) is logits_ce
    with pytest.raises(ValueError, match="takes no temperature"):
        losses.get("mse", temperature=2.0)
    with pytest.raises(ValueError, match="backend"):
        losses.SoftTargetKL(backend="gpu")


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        losses.logits_mse(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        losses.soft_target_kl(np.zeros((2, 3)), np.zeros((2, 4)))
