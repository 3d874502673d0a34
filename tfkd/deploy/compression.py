"""Compression beyond distillation, Keras 3 native: quantisation-aware and pruned students.

Both fine-tune a trained MLP student by distillation (``tfkd.rl.distill``
against the teacher, the Q-value KL of Rusu et al. 2016) in a copy whose
Dense layers are :class:`CompressedDense`, then :func:`strip` returns a plain
Keras student with the resulting weights, which ``tfkd.deploy`` exports like
any other. ``tensorflow-model-optimization`` is not used: it targets Keras 2.

Quantisation-aware distillation (Jacob et al. 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference"): the forward pass rounds what the int8 TFLite model will round,

- weights symmetric, one scale per tensor, ``s = max |W| / 127``,
  ``Ŵ = s · clip(round(W / s), −127, 127)`` (TFLite's int8 grid; per tensor
  for Dense kernels, as in TFMOT, because the converter folds only that);
- activations (the input, each hidden layer's output, the logits) per tensor
  on ``[min, max]`` ranges tracked as exponential moving averages of each
  batch's min and max, 256 levels;

with the straight-through gradient of ``tf.quantization.fake_quant_*`` (the
identity inside the range, zero outside). The int8 TFLite model is converted
from this fake-quantised graph itself, so it computes on the very grid and
ranges the student was trained on; calibrating the plain weights afresh
(post-training) would pick other activation ranges and lose most of the gain.

Magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): each
kernel has a 0/1 mask; after round ``r`` of ``R`` the mask keeps the largest
``1 − s_r`` of the weights by magnitude, with the polynomial schedule
``s_r = s_f · (1 − (1 − min(1, (r + 1) / R_p))³)`` reaching the final sparsity
``s_f`` after round ``R_p − 1``, ``R_p = R / 2``: the second half of the
rounds train at ``s_f`` (Zhu & Gupta's fine-tuning at the final sparsity),
and the best of those on the selection episodes is kept. Masked weights
get no gradient (the layer computes with ``W ⊙ M``).
"""

from __future__ import annotations


from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from tfkd.rl.loops import DistillConfig, distill

EMA_MOMENTUM = 0.99
ROUNDS = 10
PRUNING_ROUNDS = ROUNDS // 2  # the sparsity rises over these, then holds


# ------------------------------------------------------------------ the maths


def fake_quant_weights(kernel: tf.Tensor, per_channel: bool = True) -> tf.Tensor:
    """Symmetric int8 fake quantisation of a ``[in, out]`` kernel, per output channel or
    per tensor: ``s = max|W| / 127``, ``Ŵ = s · clip(round(W / s), −127, 127)``."""
    if not per_channel:
        bound = tf.maximum(tf.reduce_max(tf.abs(kernel)), 1e-8)
        return tf.quantization.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8,
                                                            narrow_range=True)
    bound = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=0), 1e-8)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=8, narrow_range=True)


def polynomial_sparsity(round_index: int, final_sparsity: float, pruning_rounds: int) -> float:
    """Zhu & Gupta's schedule: ``s_f · (1 − (1 − min(1, (r + 1) / R_p))³)``."""
    progress = min(1.0, (round_index + 1) / max(1, pruning_rounds))
    return final_sparsity * (1.0 - (1.0 - progress) ** 3)


def magnitude_mask(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for the ``round((1 − sparsity) · size)`` largest ``|kernel|`` entries, else 0."""
    keep = int(round((1.0 - sparsity) * kernel.size))
    mask = np.zeros(kernel.size, dtype=np.float32)
    if keep:
        mask[np.argsort(-np.abs(kernel).ravel(), kind="stable")[:keep]] = 1.0
    return mask.reshape(kernel.shape)


# ------------------------------------------------------------------ the layers


class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantises a tensor to 8 bits on a moving-average ``[min, max]`` range."""

    def __init__(self, momentum: float = EMA_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def build(self, input_shape):
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="range_min")
        self.range_max = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="range_max")
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

    def call(self, inputs, training=False):
        if training:
            low = tf.minimum(tf.reduce_min(inputs), 0.0)  # zero stays representable
            high = tf.maximum(tf.reduce_max(inputs), 0.0)
            first = tf.equal(self.seen, 0.0)
            m = self.momentum
            self.range_min.assign(tf.where(first, low, m * self.range_min + (1 - m) * low))
            self.range_max.assign(tf.where(first, high, m * self.range_max + (1 - m) * high))
            self.seen.assign(1.0)
        # Before any training batch the range is empty: pass the input through.
        return tf.cond(self.range_max > self.range_min,
                       lambda: tf.quantization.fake_quant_with_min_max_vars(
                           inputs, self.range_min, self.range_max, num_bits=8),
                       lambda: tf.identity(inputs))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


class CompressedDense(keras.layers.Dense):
    """A Dense layer computing with ``fake_quant(W ⊙ M)``: a pruning mask and/or int8 weights."""

    def __init__(self, units, quantize: bool = False, prune: bool = False, **kwargs):
        super().__init__(units, **kwargs)
        self.quantize, self.prune = quantize, prune

    def build(self, input_shape):
        super().build(input_shape)
        self.mask = self.add_weight(shape=self.kernel.shape, initializer="ones",
                                    trainable=False, name="mask")

    def effective_kernel(self):
        kernel = self.kernel * self.mask if self.prune else self.kernel
        # Per tensor: the TFLite converter folds a fake-quantised [in, out]
        # kernel into its [out, in] weights only with one scale (a per-channel
        # range on the wrong axis fails to convert), as in TFMOT's Dense scheme.
        return fake_quant_weights(kernel, per_channel=False) if self.quantize else kernel

    def call(self, inputs):
        outputs = tf.matmul(inputs, self.effective_kernel())
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return {**super().get_config(), "quantize": self.quantize, "prune": self.prune}


class MagnitudePruning(keras.callbacks.Callback):
    """After each distillation round, masks each kernel to the scheduled sparsity.

    Args:
        model: the compressed student (its :class:`CompressedDense` layers).
        final_sparsity: fraction of zero weights at the end, in (0, 1).
        pruning_rounds: rounds over which the sparsity rises (then held).
    """

    def __init__(self, model: keras.Model, final_sparsity: float, pruning_rounds: int):
        super().__init__()
        self.student, self.final_sparsity = model, final_sparsity
        self.pruning_rounds = pruning_rounds

    def on_epoch_end(self, epoch, logs=None):
        sparsity = polynomial_sparsity(epoch, self.final_sparsity, self.pruning_rounds)
        for layer in _dense_layers(self.student):
            kernel = np.asarray(layer.kernel) * np.asarray(layer.mask)
            layer.mask.assign(magnitude_mask(kernel, sparsity))


# ------------------------------------------------------------ copy and strip


@dataclass(frozen=True)
class CompressedStudent:
    """A fine-tuned student.

    Attributes:
        plain: the student's own layers with the fine-tuned weights (pruned
            ones exactly zero): saved as ``.keras`` and float TFLite.
        quantized: the quantisation-aware model, whose fake-quant ops give the
            int8 conversion its ranges (:func:`tfkd.deploy.convert.tflite_from_fake_quant`);
            None for a student that was not trained quantisation-aware.
    """

    plain: keras.Model
    quantized: keras.Model | None = None


def _dense_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def compressed_copy(student: keras.Model, quantize: bool, prune: bool) -> keras.Model:
    """A copy of an MLP student whose Dense layers are :class:`CompressedDense`.

    With ``quantize``, activation quantisers follow the input and every layer.

    Raises:
        ValueError: the student is not a plain stack of Dense layers.
    """
    layers = [layer for layer in student.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or any(not isinstance(layer, (keras.layers.Dense, keras.layers.Flatten))
                         for layer in layers):
        raise ValueError("quantisation-aware and pruned students need an MLP student (Dense "
                         f"layers only); got layers {[type(l).__name__ for l in layers]}")
    inputs = keras.Input(shape=student.input_shape[1:], name="observations")
    h = ActivationQuantizer(name="quantize_input")(inputs) if quantize else inputs
    for layer in layers:
        if isinstance(layer, keras.layers.Flatten):
            h = keras.layers.Flatten(name=layer.name)(h)
            continue
        dense = CompressedDense(layer.units, quantize=quantize, prune=prune,
                                activation=layer.activation, use_bias=layer.use_bias,
                                name=layer.name)
        h = dense(h)
        dense.kernel.assign(layer.kernel)
        if layer.use_bias:
            dense.bias.assign(layer.bias)
        if quantize:
            h = ActivationQuantizer(name=f"quantize_{layer.name}")(h)
    return keras.Model(inputs, h, name=f"{student.name}_compressed")


def strip(model: keras.Model, like: keras.Model) -> keras.Model:
    """A plain copy of ``like`` (the original student) holding ``model``'s trained weights.

    Pruned kernels are stored as ``W ⊙ M`` (exact zeros); quantised ones as
    the float weights, which the int8 converter rounds onto the grid trained on.
    """
    plain = keras.models.clone_model(like)
    compressed = {layer.name: layer for layer in _dense_layers(model)}
    for layer in _dense_layers(plain):
        source = compressed[layer.name]
        kernel = np.asarray(source.kernel)
        layer.kernel.assign(kernel * np.asarray(source.mask) if source.prune else kernel)
        if layer.use_bias:
            layer.bias.assign(source.bias)
    return plain


def distill_compressed(teacher, student: keras.Model, env_id: str, *, seed: int = 0,
                       total_env_steps: int = 20_000, quantize: bool = False,
                       sparsity: float | None = None, learning_rate: float = 5e-4, train_steps_per_round: int = 1_000,
                       eval_episodes: int = 10, progress: bool = True) -> keras.Model:
    """Fine-tunes a copy of ``student`` by distillation, quantisation-aware and/or pruned.

    Args:
        teacher: the teacher network.
        student: the trained float MLP student (left unchanged).
        env_id: the gymnasium env.
        seed: the run seed (rollouts, selection episodes).
        total_env_steps: env steps of the fine-tuning, in :data:`ROUNDS` rounds.
        quantize: fake-quantise weights and activations (int8).
        sparsity: final fraction of zero kernel weights, or None (no pruning).
        learning_rate: Adam's, lower than a fresh distillation's.
        train_steps_per_round: student updates per round.
        eval_episodes: selection episodes after each round, for keep-best
            (a pruned student: among the rounds at the final sparsity).
        progress: show the distillation's progress bar.

    Returns:
        The fine-tuned student: plain, and (quantisation-aware) with its
        fake-quant ranges for the int8 conversion.
    """
    if sparsity is not None and not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    if total_env_steps < ROUNDS:
        raise ValueError(f"the fine-tuning needs at least {ROUNDS} env steps")
    pruned = sparsity is not None
    model = compressed_copy(student, quantize=quantize, prune=pruned)
    callbacks = [MagnitudePruning(model, sparsity, PRUNING_ROUNDS)] if pruned else []
    config = DistillConfig(
        env_id=env_id, control="student", total_env_steps=total_env_steps,
        steps_per_round=total_env_steps // ROUNDS,
        train_steps_per_round=train_steps_per_round,
        learning_rate=learning_rate, distillation_loss="q_value_kl", beta_initial=0.5,
        eval_episodes=eval_episodes, seed=seed, progress=progress, callbacks=callbacks,
        # A pruned student is kept at its final sparsity: masks set after a
        # round shape the next one, so rounds from PRUNING_ROUNDS on are at s_f.
        keep_best_from_round=PRUNING_ROUNDS if pruned else 0)
    distill(teacher, model, config)
    return CompressedStudent(strip(model, student), model if quantize else None)
