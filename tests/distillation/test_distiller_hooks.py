"""The Distiller on Keras hooks: pinned values, the fused batch-mean protocol, clear errors."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import losses


def mlp(units, seed, name):
    inputs = keras.Input((8,), name="observations")
    h = inputs
    for i, n in enumerate(units):
        h = keras.layers.Dense(n, activation="relu", name=f"hidden_{i}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed + i))(h)
    outputs = keras.layers.Dense(4, name="logits",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 9))(h)
    return keras.Model(inputs, outputs, name=name)


def pinned_run(jit_compile=False, features=False, **kwargs):
    """Two SGD epochs and an evaluate on a fixed problem: (fit losses, evaluate logs)."""
    keras.utils.set_random_seed(0)  # the projection of feature distillation
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = rng.integers(0, 4, size=96).astype("int32")
    w = rng.uniform(size=96).astype("float32")
    teacher, student = mlp((16, 12), 11, "teacher"), mlp((6,), 21, "student")
    if features:
        kwargs["feature_distillation"] = tfkd.FeatureDistillation(
            "hidden_1", "hidden_0", distance="l2", weight=0.5)
    distiller = tfkd.Distiller(student, teacher, **kwargs)
    distiller.compile(keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    history = distiller.fit(x, y, sample_weight=w, batch_size=32, epochs=2, shuffle=False,
                            verbose=0).history
    logs = distiller.evaluate(x, y, sample_weight=w, batch_size=48, return_dict=True, verbose=0)
    return history["loss"], logs


# Losses of the two epochs, then the evaluate's loss and distillation_loss, of
# pinned_run: a change in them is a change in what the Distiller trains.
PINNED = {
    "soft_target_kl_with_task": ([0.2852462, 0.2727989], 0.2649686, 0.0969887),
    "soft_target_kl_cpp": ([0.116625, 0.1041106], 0.0963712, 0.0963712),
    "soft_target_kl_tf": ([0.1166248, 0.1041105], 0.0963712, 0.0963712),
    "q_value_kl_with_task": ([0.6850092, 0.66802], 0.6568252, 0.6601593),
    "mse_and_features_live": ([0.8217873, 0.6813256], 0.6092038, 0.6092038),
    "greedy_nll_live": ([0.719707, 0.6983215], 0.6837968, 0.69111),
    "soft_target_kl_xla": ([0.2852462, 0.2727989], 0.2649686, 0.0969887),
}

CASES = {
    "soft_target_kl_with_task": dict(alpha=0.3, temperature=2.0),
    "soft_target_kl_cpp": dict(temperature=3.0, backend="cpp"),
    "soft_target_kl_tf": dict(temperature=3.0, backend="tf"),
    "q_value_kl_with_task": dict(distillation_loss="q_value_kl", alpha=0.5),
    "mse_and_features_live": dict(distillation_loss="mse", features=True),
    "greedy_nll_live": dict(distillation_loss="greedy_action_nll", alpha=0.2,
                            cache_teacher_outputs=False),
    "soft_target_kl_xla": dict(jit_compile=True, alpha=0.3, temperature=2.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_losses_are_the_pinned_values(name):
    fit_losses, logs = pinned_run(**CASES[name])
    want_fit, want_loss, want_distill = PINNED[name]
    np.testing.assert_allclose(fit_losses, want_fit, rtol=2e-5)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=2e-5)
    np.testing.assert_allclose(logs["distillation_loss"], want_distill, rtol=2e-5)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_soft_target_kl(t, s, temperature):
    log_p, log_q = np_log_softmax(t / temperature), np_log_softmax(s / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


def problem(n=40, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    t = (rng.normal(size=(n, 4)) * 2).astype("float32")
    w = rng.uniform(size=n).astype("float32")
    return x, t, w


def test_evaluation_is_keras_test_step_on_compute_loss():
    assert tfkd.Distiller.test_step is keras.Model.test_step
    x, t, w = problem()
    student = mlp((6,), 21, "student")
    distiller = tfkd.Distiller(student, temperature=2.0)
    distiller.compile("sgd")
    loss = distiller.compute_loss(x, t, distiller(x), sample_weight=w, training=False)
    s = student.predict(x, verbose=0).astype("float64")
    want = (w * np_soft_target_kl(t.astype("float64"), s, 2.0)).mean()
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


class ScaledMSE(keras.losses.Loss):
    """A loss outside tfkd that opts into the fused batch-mean protocol."""

    fused_batch_mean = True

    def __init__(self):
        super().__init__(name="scaled_mse")
        self.batch_mean_calls = 0

    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)

    def batch_mean(self, teacher, student, sample_weight=None, scale=1.0):
        self.batch_mean_calls += 1
        values = self.call(teacher, student)
        weighted = values if sample_weight is None else values * sample_weight
        return scale * tf.reduce_mean(weighted), tf.stop_gradient(values)


def test_a_loss_that_opts_in_trains_through_its_batch_mean():
    x, t, w = problem()
    loss = ScaledMSE()
    assert losses.has_fused_batch_mean(loss)
    student = mlp((6,), 21, "student")
    s0 = student.predict(x, verbose=0).astype("float64")
    distiller = tfkd.Distiller(student, distillation_loss=loss)
    distiller.compile(keras.optimizers.SGD(0.1))
    logs = distiller.fit(x, t, sample_weight=w, batch_size=len(x), epochs=1, verbose=0).history
    assert loss.batch_mean_calls >= 1
    want = (w * ((s0 - t) ** 2).mean(-1)).mean()
    np.testing.assert_allclose(logs["loss"][0], want, rtol=1e-5)
    np.testing.assert_allclose(logs["distillation_loss"][0], want, rtol=1e-5)


def test_the_protocol_needs_the_flag_and_the_method():
    assert losses.has_fused_batch_mean(losses.SoftTargetKL())
    assert losses.has_fused_batch_mean(losses.QValueKL())
    assert not losses.has_fused_batch_mean(losses.LogitsMSE())
    assert not losses.has_fused_batch_mean(keras.losses.MeanSquaredError())

    class FlagOnly(keras.losses.Loss):
        fused_batch_mean = True

    class TruthyFlag(ScaledMSE):
        fused_batch_mean = 1

    assert not losses.has_fused_batch_mean(FlagOnly())
    assert not losses.has_fused_batch_mean(TruthyFlag())


def test_a_kl_subclass_that_changes_call_must_choose_a_path():
    with pytest.raises(TypeError, match="overrides call: set fused_batch_mean"):
        class Undecided(losses.SoftTargetKL):  # noqa: F841
            def call(self, y_true, y_pred):
                return 2.0 * super().call(y_true, y_pred)

    class Doubled(losses.SoftTargetKL):
        fused_batch_mean = False

        def call(self, y_true, y_pred):
            return 2.0 * super().call(y_true, y_pred)

    class Warmer(losses.SoftTargetKL):  # no new call: the fused path stays
        pass

    assert not losses.has_fused_batch_mean(Doubled())
    assert losses.has_fused_batch_mean(Warmer())
    x, t, w = problem()
    student = mlp((6,), 21, "student")
    s = student.predict(x, verbose=0).astype("float64")
    kl = np_soft_target_kl(t.astype("float64"), s, 2.0)
    for loss, factor in ((Doubled(2.0), 2.0), (Warmer(2.0), 1.0)):
        distiller = tfkd.Distiller(student, distillation_loss=loss)
        distiller.compile("sgd")
        logs = distiller.evaluate(x, t, sample_weight=w, batch_size=len(x), return_dict=True,
                                  verbose=0)
        np.testing.assert_allclose(logs["loss"], factor * (w * kl).mean(), rtol=1e-5)


@pytest.mark.parametrize("loss", [
    keras.losses.kl_divergence, "kld", "KLD", "kl_divergence", "kullback_leibler_divergence",
    keras.losses.KLDivergence(), keras.losses.CategoricalCrossentropy(),
    keras.losses.categorical_crossentropy,
], ids=lambda loss: getattr(loss, "name", getattr(loss, "__name__", str(loss))))
def test_a_keras_loss_on_probabilities_is_rejected(loss):
    with pytest.raises(ValueError, match=r"probabilities.*tfkd\.losses\.SoftTargetKL") as error:
        tfkd.Distiller(mlp((6,), 21, "student"), distillation_loss=loss)
    assert "\n" not in str(error.value)


def test_a_keras_cross_entropy_from_logits_is_accepted():
    distiller = tfkd.Distiller(mlp((6,), 21, "student"),
                               distillation_loss=keras.losses.CategoricalCrossentropy(
                                   from_logits=True))
    assert isinstance(distiller.distillation_loss, keras.losses.CategoricalCrossentropy)


@pytest.mark.parametrize("make_x", [
    lambda: np.zeros((0, 8), "float32"),
    lambda: tf.zeros((0, 8)),
    lambda: {"observations": np.zeros((0, 8), "float32")},
    lambda: tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 8), "float32"), np.zeros((0, 4), "float32"))).batch(4),
])
def test_fit_on_no_examples_is_a_clear_error(make_x):
    distiller = tfkd.Distiller(mlp((6,), 21, "student"))
    distiller.compile("sgd")
    x = make_x()
    y = None if isinstance(x, tf.data.Dataset) else np.zeros((0, 4), "float32")
    with pytest.raises(ValueError, match="0 examples|empty tf.data.Dataset") as error:
        distiller.fit(x, y, verbose=0)
    assert "\n" not in str(error.value)


def test_a_saved_distiller_loads_by_its_registered_names(tmp_path):
    """Loading finds the classes by "tfkd>Name", whatever module path the file records."""
    x, t, _ = problem()
    teacher, student = mlp((16, 12), 11, "teacher"), mlp((6,), 21, "student")
    keras.utils.set_random_seed(0)
    distiller = tfkd.Distiller(student, teacher, feature_distillation=tfkd.FeatureDistillation(
        "hidden_1", "hidden_0"), temperature=2.0)
    distiller.compile("sgd")
    distiller.fit(x, batch_size=len(x), verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    moved = tmp_path / "moved.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(moved, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["module"] = "tfkd.elsewhere"
                config["config"]["feature_distillation"][0]["module"] = "tfkd.elsewhere"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    restored = keras.saving.load_model(moved)
    assert isinstance(restored, tfkd.Distiller)
    assert isinstance(restored.feature_distillation[0], tfkd.FeatureDistillation)
    np.testing.assert_allclose(restored.evaluate(x, return_dict=True, verbose=0)["loss"],
                               distiller.evaluate(x, return_dict=True, verbose=0)["loss"],
                               rtol=1e-6)
