"""tfkd losses inside Keras' own keras.distillation.Distiller."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import losses


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_adapter_computes_the_batch_mean_of_the_tfkd_loss():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(16, 5)) * 3, rng.normal(size=(16, 5)) * 3
    adapter = tfkd.KerasDistillationLoss(losses.SoftTargetKL(temperature=3.0))
    assert isinstance(adapter, keras.distillation.DistillationLoss)
    log_p, log_q = np_log_softmax(t / 3), np_log_softmax(s / 3)
    want = 9 * (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
    np.testing.assert_allclose(float(adapter.compute_loss(t, s)), want, rtol=1e-5)
    clone = tfkd.KerasDistillationLoss.from_config(adapter.get_config())
    assert clone.loss.get_config() == adapter.loss.get_config()


def test_keras_distiller_learns_with_a_tfkd_loss():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 8)) * 3
    y = rng.integers(0, 4, size=1024)
    x = (centers[y] + rng.normal(size=(1024, 8))).astype("float32")
    keras.utils.set_random_seed(0)
    teacher = tfkd.models.build_mlp((8,), 4, hidden_units=(32,))
    teacher.compile(keras.optimizers.Adam(1e-2),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=5, batch_size=64, verbose=0)
    student = tfkd.models.build_mlp((8,), 4, hidden_units=(4,))
    distiller = keras.distillation.Distiller(
        teacher, student,
        distillation_losses=tfkd.KerasDistillationLoss(losses.SoftTargetKL(temperature=4.0)),
        student_loss_weight=0.1)
    distiller.compile(keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, epochs=8, batch_size=64, verbose=0)
    accuracy = (student.predict(x, verbose=0).argmax(-1) == y).mean()
    assert accuracy > 0.9


def test_adapter_rejects_a_keras_loss_on_probabilities():
    with pytest.raises(ValueError, match="expects probabilities.*SoftTargetKL"):
        tfkd.KerasDistillationLoss(keras.losses.KLDivergence())
