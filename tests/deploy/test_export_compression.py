"""Quantisation-aware and pruned students: the fake-quant grid against a float64 NumPy
reference, Zhu & Gupta's schedule, masks, and a pruned CartPole student end to end."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd import rl
from tfkd.deploy import compression, convert, runtime

CONTROLLER = np.array([0.1, 0.5, 1.0, 0.5], np.float32)


def _teacher() -> keras.Model:
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, use_bias=False, name="logits")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([10.0 * np.stack([-CONTROLLER, CONTROLLER], axis=1)])
    return model


def _reference_fake_quant(kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    kernel = kernel.astype(np.float64)
    bound = np.abs(kernel).max(axis=0) if per_channel else np.abs(kernel).max()
    scale = bound / 127.0
    return scale * np.clip(np.round(kernel / scale), -127, 127)


@pytest.mark.parametrize("per_channel", [True, False])
def test_fake_quant_weights_is_tflites_symmetric_int8_grid(per_channel):
    kernel = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    kernel[:, 2] *= 10.0  # one wide channel: per-tensor scales coarsen the others
    got = compression.fake_quant_weights(tf.constant(kernel), per_channel).numpy()
    np.testing.assert_allclose(got, _reference_fake_quant(kernel, per_channel), rtol=1e-5,
                               atol=1e-6)
    levels = [len(np.unique(got[:, j])) for j in range(kernel.shape[1])]
    assert max(levels) <= 8


def test_fake_quant_gradient_is_straight_through():
    kernel = tf.Variable(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(compression.fake_quant_weights(kernel) * 3.0)
    np.testing.assert_allclose(tape.gradient(loss, kernel).numpy(), 3.0)


def test_polynomial_sparsity_follows_zhu_and_gupta():
    final, rounds = 0.8, 9
    values = [compression.polynomial_sparsity(r, final, rounds) for r in range(10)]
    expected = [final * (1 - (1 - min(1.0, (r + 1) / rounds)) ** 3) for r in range(10)]
    np.testing.assert_allclose(values, expected)
    assert values[rounds - 1] == pytest.approx(final) and values[-1] == pytest.approx(final)
    assert all(a < b for a, b in zip(values[:rounds - 1], values[1:rounds]))


def test_magnitude_mask_keeps_the_largest_weights():
    kernel = np.random.default_rng(2).normal(size=(10, 10))
    mask = compression.magnitude_mask(kernel, 0.7)
    assert mask.sum() == 30
    assert np.abs(kernel[mask == 1]).min() >= np.abs(kernel[mask == 0]).max()


def test_activation_quantizer_tracks_the_range_and_rounds_to_256_levels():
    layer = compression.ActivationQuantizer(momentum=0.5)
    x = tf.constant(np.linspace(-1.0, 3.0, 1000, dtype=np.float32)[None])
    untrained = layer(x).numpy()
    np.testing.assert_array_equal(untrained, x.numpy())  # no range yet: passed through
    layer(x, training=True)
    assert layer.range_min.numpy() == pytest.approx(-1.0)
    assert layer.range_max.numpy() == pytest.approx(3.0)
    layer(2.0 * x, training=True)  # EMA: halfway to the new range
    assert layer.range_max.numpy() == pytest.approx(4.5)
    assert len(np.unique(layer(x).numpy())) <= 256


class _SparsityLog(keras.callbacks.Callback):
    """Each round's sparsity as the round trained and was evaluated."""

    def __init__(self, model):
        super().__init__()
        self.model_, self.sparsities = model, []

    def on_epoch_end(self, epoch, logs=None):
        masks = [np.asarray(layer.mask) for layer in compression._dense_layers(self.model_)]
        self.sparsities.append(1 - sum(m.sum() for m in masks) / sum(m.size for m in masks))


def test_a_pruned_student_is_the_best_round_at_the_final_sparsity(monkeypatch):
    """The sparsity rises over the first PRUNING_ROUNDS rounds; keep-best picks among the rest."""
    teacher, student = _teacher(), keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    configs, logs = [], []

    def recording_distill(teacher, model, config):
        log = _SparsityLog(model)  # runs before MagnitudePruning: the round's own masks
        logs.append(log)
        configs.append(config)
        return rl.distill(teacher, model, dataclasses.replace(
            config, callbacks=[log, *config.callbacks]))

    monkeypatch.setattr(compression, "distill", recording_distill)
    compression.distill_compressed(teacher, student, "CartPole-v1", total_env_steps=1_000,
                                   sparsity=0.5, train_steps_per_round=5, eval_episodes=1,
                                   progress=False)
    assert configs[0].keep_best and configs[0].keep_best_from_round == compression.PRUNING_ROUNDS
    sparsities = logs[0].sparsities
    assert sparsities[0] == 0.0 and 0.0 < sparsities[1] < 0.5  # the first round is dense
    assert sparsities == sorted(sparsities)
    at_final = sparsities[compression.PRUNING_ROUNDS:]
    assert len(at_final) >= compression.ROUNDS - compression.PRUNING_ROUNDS
    assert at_final == pytest.approx([0.5] * len(at_final), abs=0.01)


def test_pruned_distillation_reaches_the_sparsity_and_still_balances():
    teacher = _teacher()
    rl.seed_everything(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                                keras.layers.Dense(2)])
    rl.distill(teacher, student, rl.DistillConfig(
        env_id="CartPole-v1", total_env_steps=1_500, steps_per_round=500,
        train_steps_per_round=300, learning_rate=3e-3, eval_episodes=2, progress=False))
    compressed = compression.distill_compressed(
        teacher, student, "CartPole-v1", total_env_steps=1_000, sparsity=0.75,
        train_steps_per_round=50, eval_episodes=1, progress=False, learning_rate=3e-3)
    assert compressed.quantized is None
    pruned = compressed.plain
    kernels = [np.asarray(w) for w in pruned.weights if w.ndim == 2]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert zeros == pytest.approx(0.75, abs=0.01)
    assert [type(layer) for layer in pruned.layers] == [type(layer) for layer in student.layers]
    stats = rl.evaluate_policy("CartPole-v1", pruned, rl.held_out_seeds(0, 5))
    assert stats.mean >= 400  # a quarter of the weights still balance the pole


def test_quantisation_aware_student_matches_its_int8_export(tmp_path):
    rl.seed_everything(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                                keras.layers.Dense(2)])
    qat = compression.compressed_copy(student, quantize=True, prune=False)
    observations = np.random.default_rng(3).normal(size=(512, 4)).astype(np.float32)
    for batch in np.split(observations, 8):  # the activation ranges of these observations
        qat(batch, training=True)
    content = convert.tflite_from_fake_quant(qat)
    assert all(layer["weights"] == "int8" and layer["input"] == "int8"
               for layer in convert.layer_dtypes(content))
    (tmp_path / "qat-int8.tflite").write_bytes(content)
    int8 = runtime.load(tmp_path / "qat-int8.tflite", "tflite-int8")
    simulated = np.asarray(qat(observations))
    _, logits = int8(observations)
    # The same grid and ranges: the int8 model differs from the simulation by
    # integer rounding inside TFLite's kernels only.
    span = simulated.max() - simulated.min()
    assert np.abs(logits - simulated).max() < 0.05 * span
    assert np.mean(logits.argmax(1) == simulated.argmax(1)) >= 0.97
