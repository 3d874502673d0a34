"""Teacher ensembles against float64 NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from tfkd.distillation import TeacherEnsemble
from tfkd.distillation.ensemble import max_q_values, mean_policy_logits, most_confident_outputs


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.01, 1.0, 4.0])
def test_mean_policy_logits_give_back_the_mean_policy(temperature):
    rng = np.random.default_rng(0)
    outputs = [rng.normal(scale=3, size=(7, 4)) for _ in range(3)]
    expected = np.mean([softmax(t / temperature) for t in outputs], axis=0)
    logits = mean_policy_logits([tf.constant(t, tf.float32) for t in outputs], temperature)
    np.testing.assert_allclose(softmax(logits.numpy().astype(np.float64) / temperature),
                               expected, atol=1e-6)


def test_most_confident_takes_each_row_from_its_surest_teacher():
    rng = np.random.default_rng(1)
    outputs = [rng.normal(scale=2, size=(50, 3)) for _ in range(3)]
    confidence = np.stack([softmax(t / 2.0).max(-1) for t in outputs])  # [K, batch]
    expected = np.stack(outputs)[confidence.argmax(0), np.arange(50)]
    chosen = most_confident_outputs([tf.constant(t, tf.float32) for t in outputs], 2.0)
    np.testing.assert_allclose(chosen.numpy(), expected, rtol=1e-6)


def test_max_q_takes_each_action_value_from_its_highest_teacher():
    rng = np.random.default_rng(2)
    outputs = [rng.normal(scale=5, size=(50, 4)) for _ in range(3)]
    combined = max_q_values([tf.constant(t, tf.float32) for t in outputs], 0.01)
    np.testing.assert_allclose(combined.numpy(), np.max(outputs, axis=0), rtol=1e-6)


def test_max_q_acts_like_generalized_policy_improvement():
    # Two teachers, each good in half the states (Q = +1 on its own action
    # there, -1 elsewhere); the combination acts on each half as its expert.
    x = tf.constant([[1.0], [-1.0]])
    right = lambda x: tf.concat([-tf.ones_like(x), tf.sign(x)], axis=-1)  # noqa: E731
    left = lambda x: tf.concat([-tf.sign(x), -tf.ones_like(x)], axis=-1)  # noqa: E731
    greedy = tf.argmax(TeacherEnsemble([right, left], "max_q")(x), axis=-1).numpy()
    np.testing.assert_array_equal(greedy, [1, 0])


def test_the_ensemble_is_a_teacher_network():
    low = lambda x: tf.stack([x[:, 0], -x[:, 0]], axis=-1)  # noqa: E731
    high = lambda x: 10.0 * tf.stack([-x[:, 0], x[:, 0]], axis=-1)  # noqa: E731
    x = tf.constant([[1.0], [-2.0]])
    np.testing.assert_allclose(TeacherEnsemble([low, high], "most_confident")(x).numpy(),
                               high(x).numpy())
    mean = TeacherEnsemble([low, high], "mean", temperature=1.0)(x).numpy()
    np.testing.assert_allclose(softmax(mean.astype(np.float64)),
                               (softmax(low(x).numpy()) + softmax(high(x).numpy())) / 2, atol=1e-6)


def test_bad_ensembles_are_refused():
    teacher = lambda x: x  # noqa: E731
    with pytest.raises(ValueError, match="at least two teachers"):
        TeacherEnsemble([teacher])
    with pytest.raises(ValueError, match="combination must be one of"):
        TeacherEnsemble([teacher, teacher], "vote")
    with pytest.raises(ValueError, match="temperature"):
        TeacherEnsemble([teacher, teacher], temperature=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        mean_policy_logits([tf.zeros((2, 3)), tf.zeros((2, 4))], 1.0)
