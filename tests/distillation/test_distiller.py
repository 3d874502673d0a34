import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tfkd
from tfkd import losses
from tfkd.models import build_mlp


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y.astype("int32"), train_size=0.6, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def teacher(digits):
    x_train, _, y_train, _ = digits
    keras.utils.set_random_seed(0)
    model = build_mlp((64,), 10, hidden_units=(64,), name="teacher")
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=15, batch_size=64, verbose=0)
    return model


def student(seed=1, units=(16,)):
    keras.utils.set_random_seed(seed)
    return build_mlp((64,), 10, hidden_units=units, name="student")


def accuracy(model, x, y):
    return float((model.predict(x, verbose=0).argmax(-1) == y).mean())


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_default_distiller_learns_from_precomputed_teacher_outputs(digits, teacher):
    """The RL path: teacher=None, data = (observations, teacher outputs), all defaults."""
    x_train, x_test, _, y_test = digits
    teacher_logits = teacher.predict(x_train, verbose=0)
    distiller = tfkd.Distiller(student=student())
    distiller.compile(keras.optimizers.Adam(1e-2))
    dataset = tf.data.Dataset.from_tensor_slices((x_train, teacher_logits)).batch(64)
    history = distiller.fit(dataset, epochs=15, verbose=0)
    assert history.history["agreement"][-1] > 0.9
    assert accuracy(distiller.student, x_test, y_test) > 0.85
    np.testing.assert_allclose(distiller.predict(x_test[:5], verbose=0),
                               distiller.student.predict(x_test[:5], verbose=0), rtol=1e-6)


def test_q_value_kl_distils_greedy_actions(digits, teacher):
    x_train, _, _, _ = digits
    q_values = teacher.predict(x_train, verbose=0)
    distiller = tfkd.Distiller(student=student(), teacher=None, distillation_loss="q_value_kl")
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(x_train, q_values, batch_size=64, epochs=10, verbose=0)
    assert history.history["agreement"][-1] > 0.9


def test_loss_and_metrics_follow_the_formula(digits, teacher):
    x, _, y, _ = digits
    x, y = x[:96], y[:96]
    weights = np.random.default_rng(0).uniform(size=len(x)).astype("float32")
    model = student()
    alpha, temperature = 0.3, 2.0
    distiller = tfkd.Distiller(model, teacher, alpha=alpha, temperature=temperature)
    distiller.compile("sgd", metrics=["accuracy"])
    logs = distiller.evaluate(x, y, sample_weight=weights, batch_size=len(x), return_dict=True,
                              verbose=0)

    t = teacher.predict(x, verbose=0).astype("float64")
    s = model.predict(x, verbose=0).astype("float64")
    log_p, log_q = np_log_softmax(t / temperature), np_log_softmax(s / temperature)
    distill = temperature ** 2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)
    task = -np_log_softmax(s)[np.arange(len(y)), y]
    total = alpha * task + (1 - alpha) * distill
    entropy = lambda z: -(np.exp(np_log_softmax(z)) * np_log_softmax(z)).sum(-1)
    np.testing.assert_allclose(logs["loss"], (weights * total).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["task_loss"], (weights * task).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["distillation_loss"], (weights * distill).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["agreement"],
                               (weights * (t.argmax(-1) == s.argmax(-1))).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["teacher_entropy"], (weights * entropy(t)).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["student_entropy"], (weights * entropy(s)).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["accuracy"],
                               (weights * (s.argmax(-1) == y)).sum() / weights.sum(), rtol=1e-5)


def test_train_step_is_one_gradient_step_on_the_student_only(digits, teacher):
    x, _, y, _ = digits
    x, y = x[:32], y[:32]
    model = student()
    before = [w.numpy().copy() for w in model.trainable_weights]
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    distiller = tfkd.Distiller(model, teacher, alpha=0.5, temperature=3.0, backend="cpp")
    assert [id(w) for w in distiller.trainable_weights] == [id(w) for w in
                                                            model.trainable_weights]
    distiller.compile(keras.optimizers.SGD(0.5))

    t = tf.constant(teacher.predict(x, verbose=0))
    variables = [tf.Variable(w) for w in before]
    with tf.GradientTape() as tape:
        h = tf.nn.relu(x @ variables[0] + variables[1])
        s = h @ variables[2] + variables[3]
        kl = 9.0 * tf.reduce_sum(tf.nn.softmax(t / 3) * (tf.nn.log_softmax(t / 3)
                                                        - tf.nn.log_softmax(s / 3)), -1)
        task = tf.nn.sparse_softmax_cross_entropy_with_logits(y, s)
        reference = tf.reduce_mean(0.5 * task + 0.5 * kl)
    gradients = tape.gradient(reference, variables)

    distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for w, w0, g in zip(model.trainable_weights, before, gradients):
        np.testing.assert_allclose(w.numpy(), w0 - 0.5 * g.numpy(), rtol=1e-4, atol=1e-6)
    for w, w0 in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(w.numpy(), w0)
    assert tfkd.ops.last_backend() == "cpp"


@pytest.mark.parametrize("backend", ["cpp", "tf"])
def test_kl_term_of_rank_3_outputs_with_sample_weights_steps_like_the_formula(backend,
                                                                              monkeypatch):
    """[batch, heads, actions] outputs and per-example weights through the fused KL mean."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 5)).astype("float32")
    t = rng.normal(size=(24, 3, 4)).astype("float32") * 2
    weights = rng.uniform(size=24).astype("float32")
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(12),
                              keras.layers.Reshape((3, 4))])
    before = [w.numpy().copy() for w in model.trainable_weights]
    variables = [tf.Variable(w) for w in before]
    with tf.GradientTape() as tape:
        s = tf.reshape(x @ variables[0] + variables[1], [24, 3, 4])
        kl = tf.reduce_sum(tf.nn.softmax(t / 2) * (tf.nn.log_softmax(t / 2)
                                                   - tf.nn.log_softmax(s / 2)), -1)
        reference = tf.reduce_mean(weights * 0.6 * 4.0 * tf.reduce_mean(kl, -1))
    gradients = tape.gradient(reference, variables)

    calls = []
    batch_mean = losses.SoftTargetKL.batch_mean
    monkeypatch.setattr(losses.SoftTargetKL, "batch_mean",
                        lambda *a, **k: calls.append(1) or batch_mean(*a, **k))
    distiller = tfkd.Distiller(model, alpha=0.4, task_loss="mse", temperature=2.0,
                               backend=backend)
    distiller.compile(keras.optimizers.SGD(0.5))
    # labels equal to the student's outputs make the task term's gradient 0 at this step
    targets = {"teacher_outputs": t, "labels": model.predict(x, verbose=0)}
    logs = distiller.fit(x, targets, sample_weight=weights, batch_size=24, epochs=1,
                         shuffle=False, verbose=0).history
    assert calls, "the Distiller should use the KL loss's fused batch mean"
    for w, w0, g in zip(model.trainable_weights, before, gradients):
        np.testing.assert_allclose(w.numpy(), w0 - 0.5 * g.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["loss"][0], reference.numpy(), rtol=1e-5)
    assert tfkd.ops.last_backend() == backend


def test_a_kl_subclass_that_overrides_call_trains_with_its_call(digits, teacher):
    class DoubledKL(losses.SoftTargetKL):
        fused_batch_mean = False  # train with this call, not the inherited batch_mean

        def call(self, y_true, y_pred):
            return 2.0 * super().call(y_true, y_pred)

    x, _, _, _ = digits
    t = teacher.predict(x[:64], verbose=0)
    model = student()
    logs = {}
    for name, loss in (("plain", losses.SoftTargetKL(2.0)), ("doubled", DoubledKL(2.0))):
        distiller = tfkd.Distiller(model, distillation_loss=loss)
        distiller.compile("sgd")
        logs[name] = distiller.evaluate(x[:64], t, batch_size=64, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["doubled"]["loss"], 2 * logs["plain"]["loss"], rtol=1e-6)
    np.testing.assert_allclose(logs["doubled"]["distillation_loss"],
                               2 * logs["plain"]["distillation_loss"], rtol=1e-6)


def test_callable_teacher_and_dict_targets(digits, teacher):
    x, _, y, _ = digits
    calls = []

    def teacher_fn(observations):
        calls.append(1)
        return teacher(observations) * 1.0

    distiller = tfkd.Distiller(student(), teacher_fn, alpha=0.5)
    distiller.compile("adam")
    distiller.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert calls and len(distiller.trainable_weights) == 4

    precomputed = tfkd.Distiller(student(), alpha=0.5)
    precomputed.compile("adam", metrics=["accuracy"])
    targets = {"teacher_outputs": teacher.predict(x[:64], verbose=0), "labels": y[:64]}
    logs = precomputed.fit(x[:64], targets, batch_size=32, epochs=1, verbose=0).history
    assert {"loss", "task_loss", "distillation_loss", "accuracy"} <= set(logs)


def test_feature_distillation_trains_a_projection(digits):
    x, _, _, _ = digits
    keras.utils.set_random_seed(3)
    big = build_mlp((64,), 10, hidden_units=(32, 24), name="big")
    small = build_mlp((64,), 10, hidden_units=(8,), name="small")
    feature = tfkd.FeatureDistillation("hidden_1", "hidden_0", distance="mse", weight=2.0)
    distiller = tfkd.Distiller(small, big, distillation_loss="mse", feature_distillation=feature)
    assert len(distiller.trainable_weights) == len(small.trainable_weights) + 1
    distiller.compile(keras.optimizers.Adam(1e-2))
    logs = distiller.evaluate(x[:64], batch_size=64, return_dict=True, verbose=0)

    t_hidden = keras.Model(big.inputs, big.get_layer("hidden_1").output).predict(x[:64], verbose=0)
    s_hidden = keras.Model(small.inputs, small.get_layer("hidden_0").output).predict(x[:64],
                                                                                    verbose=0)
    projected = s_hidden @ feature.projection.kernel.numpy()
    mse = ((big.predict(x[:64], verbose=0) - small.predict(x[:64], verbose=0)) ** 2).mean(-1)
    want = mse + 2.0 * ((projected - t_hidden) ** 2).mean(-1)
    np.testing.assert_allclose(logs["distillation_loss"], want.mean(), rtol=1e-4)

    kernel = feature.projection.kernel.numpy().copy()
    history = distiller.fit(x, epochs=5, batch_size=64, verbose=0).history
    assert not np.allclose(kernel, feature.projection.kernel.numpy())
    assert history["loss"][-1] < history["loss"][0]

    with pytest.raises(ValueError, match="no layer named 'hidden_9'"):
        tfkd.Distiller(small, big, feature_distillation=tfkd.FeatureDistillation("hidden_9",
                                                                                 "hidden_0"))


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.5}, r"alpha must be a number in \[0, 1\], got 1.5"),
    ({"alpha": -0.1}, "alpha must be"),
    ({"temperature": 0.0}, "temperature must be finite and > 0"),
    ({"temperature": -2.0}, "temperature"),
    ({"distillation_loss": "kld"}, "Keras' KL on probabilities.*SoftTargetKL"),
    ({"distillation_loss": keras.losses.KLDivergence()}, "expects probabilities"),
    ({"task_loss": "hinge", "alpha": 0.5}, "unknown task_loss"),
    ({"backend": "gpu"}, "backend must be one of"),
    ({"distillation_loss": losses.LogitsMSE(), "temperature": 2.0}, "temperature= applies only"),
])
def test_bad_arguments_are_clear_errors(teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfkd.Distiller(student(), teacher, **kwargs)


def test_teacher_and_student_shapes_must_agree(digits, teacher):
    x, _, _, _ = digits
    wrong = build_mlp((64,), 7, hidden_units=(4,))
    with pytest.raises(ValueError, match=r"differ in shape: teacher \(None, 10\), student "
                                         r"\(None, 7\)"):
        tfkd.Distiller(wrong, teacher)
    distiller = tfkd.Distiller(wrong)  # precomputed outputs: found at the first step
    distiller.compile("adam")
    with pytest.raises(ValueError, match="differ in shape"):
        distiller.fit(x[:32], np.zeros((32, 10), "float32"), verbose=0)


def test_missing_teacher_outputs_or_labels_are_clear_errors(digits):
    x, _, y, _ = digits
    distiller = tfkd.Distiller(student())
    distiller.compile("adam")
    with pytest.raises(ValueError, match="teacher=None, so the data must carry the teacher's"):
        distiller.fit(x[:32], verbose=0)
    with pytest.raises(ValueError, match="without 'teacher_outputs'"):
        distiller.fit(x[:32], {"labels": y[:32]}, verbose=0)
    needs_labels = tfkd.Distiller(student(), alpha=0.5)
    needs_labels.compile("adam")
    with pytest.raises(ValueError, match="needs labels"):
        needs_labels.fit(x[:32], np.zeros((32, 10), "float32"), verbose=0)
    with pytest.raises(ValueError, match="takes no loss"):
        distiller.compile("adam", loss="mse")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_non_finite_loss_stops_training_and_keeps_the_last_good_weights(digits, jit_compile):
    x, _, _, _ = digits
    targets = np.zeros((64, 10), "float32")
    targets[32:] = np.nan  # the second batch
    distiller = tfkd.Distiller(student())
    distiller.compile(keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    distiller.fit(x[:32], targets[:32], batch_size=32, verbose=0)
    good = [w.numpy().copy() for w in distiller.student.weights]
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        distiller.fit(x[32:64], targets[32:], batch_size=32, verbose=0)
    for w, w0 in zip(distiller.student.weights, good):
        np.testing.assert_array_equal(w.numpy(), w0)


def test_callbacks_validation_and_saving(digits, teacher, tmp_path):
    x_train, x_test, y_train, y_test = digits
    distiller = tfkd.Distiller(student(), teacher, alpha=0.2, temperature=2.0)
    distiller.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(tmp_path / "distiller.keras", monitor="val_loss"),
        keras.callbacks.BackupAndRestore(tmp_path / "backup"),
        keras.callbacks.TensorBoard(tmp_path / "logs"),
    ]
    history = distiller.fit(x_train[:512], y_train[:512], validation_data=(x_test, y_test),
                            batch_size=128, epochs=3, callbacks=callbacks, verbose=0).history
    assert {"val_loss", "val_accuracy", "val_agreement"} <= set(history)
    assert list((tmp_path / "logs").glob("*/events.out.tfevents.*"))

    restored = keras.saving.load_model(tmp_path / "distiller.keras", safe_mode=True)
    assert isinstance(restored, tfkd.Distiller)
    assert isinstance(restored.distillation_loss, losses.SoftTargetKL)
    assert restored.distillation_loss.temperature == 2.0 and restored.alpha == 0.2
    logs = restored.evaluate(x_test, y_test, return_dict=True, verbose=0)
    assert "accuracy" in logs and "task_loss" in logs

    distiller.student.save(tmp_path / "student.keras")
    alone = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    np.testing.assert_allclose(alone.predict(x_test, verbose=0),
                               distiller.student.predict(x_test, verbose=0), rtol=1e-6)

    clone = tfkd.Distiller.from_config(distiller.get_config())
    assert clone.get_config() == distiller.get_config()


def test_non_keras_teacher_cannot_be_serialised(teacher):
    distiller = tfkd.Distiller(student(), lambda x: teacher(x))
    with pytest.raises(NotImplementedError, match="non-Keras teacher"):
        distiller.get_config()


def test_jit_compile_uses_the_tf_backend(digits, teacher):
    x, _, y, _ = digits
    distiller = tfkd.Distiller(student(), teacher, alpha=0.1, temperature=2.0)
    distiller.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
    history = distiller.fit(x[:512], y[:512], batch_size=128, epochs=3, verbose=0).history
    assert distiller.jit_compile and history["loss"][-1] < history["loss"][0]
    assert tfkd.ops.last_backend() == "tf"

    forced = tfkd.Distiller(student(), teacher, backend="cpp")
    forced.compile("adam", jit_compile=True)
    with pytest.raises(ValueError, match="XLA"):
        forced.fit(x[:32], y[:32], verbose=0)


def test_mixed_precision(digits):
    x, _, _, _ = digits
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = student()
        targets = np.random.default_rng(0).normal(size=(len(x), 10)).astype("float32") * 3
        distiller = tfkd.Distiller(model)
        distiller.compile(keras.optimizers.Adam(1e-2))
        history = distiller.fit(x[:512], targets[:512], batch_size=128, epochs=4,
                                verbose=0).history
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("hidden_0").compute_dtype == "float16"
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]


def test_tf_keras_teacher_is_called_but_never_trained(digits):
    """A Keras 2 (tf_keras) network, as TF-Agents' QNetwork is, works as a callable teacher."""
    import tf_keras

    x, _, _, _ = digits
    legacy = tf_keras.Sequential([tf_keras.layers.Dense(10, input_shape=(64,))])
    before = [w.numpy().copy() for w in legacy.weights]
    distiller = tfkd.Distiller(student(), legacy, distillation_loss="q_value_kl")
    assert len(distiller.trainable_weights) == len(distiller.student.trainable_weights)
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(x[:256], batch_size=64, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    for w, w0 in zip(legacy.weights, before):
        np.testing.assert_array_equal(w.numpy(), w0)


def counting_predict(model, monkeypatch):
    """Counts ``model.predict`` calls (the Distiller's teacher pre-pass)."""
    calls = []
    predict = model.predict

    def wrapper(*args, **kwargs):
        calls.append(1)
        return predict(*args, **kwargs)

    monkeypatch.setattr(model, "predict", wrapper)
    return calls


def test_cached_teacher_trains_like_the_live_teacher(digits, teacher, monkeypatch):
    x, _, y, _ = digits
    x, y = x[:256], y[:256]
    calls = counting_predict(teacher, monkeypatch)
    results = {}
    for cache in (True, False):
        distiller = tfkd.Distiller(student(), teacher, alpha=0.3, temperature=2.0,
                                   cache_teacher_outputs=cache)
        distiller.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
        history = distiller.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0).history
        results[cache] = history, [w.numpy() for w in distiller.student.weights]
    assert len(calls) == 1  # the cached run only
    (cached, cached_weights), (live, live_weights) = results[True], results[False]
    assert set(cached) == set(live)
    for name in live:
        np.testing.assert_allclose(cached[name], live[name], rtol=1e-5, atol=1e-6)
    for w, w0 in zip(cached_weights, live_weights):
        np.testing.assert_allclose(w, w0, rtol=1e-5, atol=1e-6)


def test_teacher_runs_once_per_data_and_teacher_weights(digits, monkeypatch):
    x, _, y, _ = digits
    x, y = x[:128], y[:128]
    keras.utils.set_random_seed(5)
    teacher = build_mlp((64,), 10, hidden_units=(8,), name="fresh_teacher")
    calls = counting_predict(teacher, monkeypatch)
    distiller = tfkd.Distiller(student(), teacher)  # alpha=0: labels optional
    distiller.compile("adam")
    for _ in range(3):  # positional and keyword arguments alike
        distiller.fit(x, y, 64, 1, 0)
        distiller.fit(x=tf.constant(x), y=y, batch_size=64, epochs=1, verbose=0)
    assert len(calls) == 1
    distiller.fit(x[::-1].copy(), y[::-1].copy(), batch_size=64, verbose=0)  # other data
    assert len(calls) == 2
    distiller.fit(x[::-1].copy(), batch_size=64, verbose=0)  # same data, no labels
    assert len(calls) == 2
    kernel = teacher.layers[-1].kernel
    kernel.assign(kernel.numpy() * 2.0)  # other teacher weights
    distiller.fit(x[::-1].copy(), y[::-1].copy(), batch_size=64, verbose=0)
    assert len(calls) == 3

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    logs = distiller.fit(dataset, shuffle=False, verbose=0).history  # live teacher
    assert np.isfinite(logs["loss"]).all()
    targets = {"teacher_outputs": teacher.predict(x, verbose=0), "labels": y}
    distiller.fit(x, targets, batch_size=64, verbose=0)  # given outputs are used as they are
    live = tfkd.Distiller(student(), teacher, alpha=0.5, cache_teacher_outputs=False)
    live.compile("adam")
    live.fit(x, y, batch_size=64, verbose=0)
    assert len(calls) == 4  # only the predict of this test


def test_cached_teacher_with_validation_split_and_sample_weight(digits, teacher, monkeypatch):
    x, _, y, _ = digits
    x, y = x[:256], y[:256]
    weights = np.random.default_rng(0).uniform(size=len(x)).astype("float32")
    calls = counting_predict(teacher, monkeypatch)
    histories = []
    for cache in (True, False):
        distiller = tfkd.Distiller(student(), teacher, alpha=0.3, cache_teacher_outputs=cache)
        distiller.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
        histories.append(distiller.fit(x, y, sample_weight=weights, validation_split=0.25,
                                       batch_size=64, epochs=2, shuffle=False,
                                       verbose=0).history)
    assert len(calls) == 1
    assert {"val_loss", "val_accuracy", "val_agreement"} <= set(histories[0])
    for name in histories[1]:
        np.testing.assert_allclose(histories[0][name], histories[1][name], rtol=1e-5,
                                   atol=1e-6)


def test_cache_flag_is_in_the_config_and_must_be_a_bool(teacher):
    distiller = tfkd.Distiller(student(), teacher, cache_teacher_outputs=False)
    config = distiller.get_config()
    assert config["cache_teacher_outputs"] is False
    assert tfkd.Distiller.from_config(config).cache_teacher_outputs is False
    assert tfkd.Distiller(student(), teacher).cache_teacher_outputs is True
    with pytest.raises(ValueError, match="cache_teacher_outputs must be True or False"):
        tfkd.Distiller(student(), teacher, cache_teacher_outputs="yes")
    with pytest.raises(ValueError, match="cache_teacher_outputs"):
        tfkd.Distiller(student(), teacher, cache_teacher_outputs=1)


def test_fingerprint_sees_shape_dtype_and_bytes():
    from tfkd.distillation.teacher_cache import fingerprint

    a = np.arange(6, dtype="float32")
    assert fingerprint([a]) == fingerprint([a.copy()]) == fingerprint([tf.constant(a)])
    assert fingerprint([a]) != fingerprint([a.reshape(2, 3)])
    assert fingerprint([a]) != fingerprint([a.astype("float64")])
    b = a.copy()
    b[3] += 1e-3
    assert fingerprint([a]) != fingerprint([b])
    assert fingerprint([a, b]) != fingerprint([b, a])
    assert fingerprint([a.reshape(2, 3).T]) == fingerprint([np.ascontiguousarray(
        a.reshape(2, 3).T)])
