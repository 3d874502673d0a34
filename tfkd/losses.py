"""Distillation losses: pure functions plus thin ``keras.losses.Loss`` wrappers.

Every function takes the teacher's outputs first and the student's second,
both ``[batch, ..., actions]`` logits or Q-values, and returns one loss per
example (the last axis reduced). The wrappers take ``y_true = teacher
outputs`` and ``y_pred = student outputs``, so they also work in a plain
``model.compile(loss=...)``.
"""

from __future__ import annotations

import numbers

import keras
import tensorflow as tf
from keras.src.losses.loss import Loss
from keras.src.losses.losses import LossFunctionWrapper

from tfkd.ops import BACKENDS, softmax_kl, softmax_kl_mean

__all__ = [
    "GreedyActionNLL",
    "LogitsMSE",
    "QValueKL",
    "SoftTargetKL",
    "TemperatureKL",
    "feature_distance",
    "get",
    "greedy_action_nll",
    "logits_mse",
    "q_value_kl",
    "soft_target_kl",
]


def soft_target_kl(teacher_logits, student_logits, temperature=1.0,
                   scale_by_temperature_squared=True, backend="auto"):
    """Hinton et al. (2015) soft-target loss, per example.

        loss = T^2 * KL(softmax(t / T) || softmax(s / T))

    The T^2 factor keeps the gradient's size independent of T ("Distilling
    the Knowledge in a Neural Network", Hinton, Vinyals & Dean, 2015).

    Args:
        teacher_logits: ``[batch, ..., actions]``; no gradient flows to it.
        student_logits: the same shape.
        temperature: T > 0, shared by teacher and student.
        scale_by_temperature_squared: multiply by T^2 (default True).
        backend: ``tfkd.ops.softmax_kl`` backend: "auto", "cpp" or "tf".

    Returns:
        ``[batch, ...]`` float tensor.
    """
    kl = softmax_kl(teacher_logits, student_logits, temperature=temperature, backend=backend)
    if scale_by_temperature_squared:
        # A Python number stays exact in a float64 kl (tf.cast would go through float32).
        kl = kl * (tf.square(tf.cast(temperature, kl.dtype)) if tf.is_tensor(temperature)
                   else float(temperature) ** 2)
    return kl


def q_value_kl(teacher_q_values, student_logits, temperature=0.01, backend="auto"):
    """Rusu et al. (2016) policy distillation from Q-values, per example.

        loss = KL(softmax(q_teacher / tau) || softmax(s))

    The teacher's Q-values are sharpened by a small tau; the student's outputs
    are logits at temperature 1 ("Policy Distillation", Rusu et al., 2016).

    Args:
        teacher_q_values: ``[batch, ..., actions]``; no gradient flows to it.
        student_logits: the same shape.
        temperature: tau > 0 (default 0.01).
        backend: ``tfkd.ops.softmax_kl`` backend.

    Returns:
        ``[batch, ...]`` float tensor.
    """
    return softmax_kl(teacher_q_values, student_logits, temperature=temperature,
                      student_temperature=1.0, backend=backend)


def greedy_action_nll(teacher_logits, student_logits):
    """Negative log-likelihood of the teacher's greedy action, per example.

        loss = -log softmax(s)[argmax_a t_a]

    The "NLL" loss of Rusu et al. (2016), "Policy Distillation".
    """
    teacher_logits, student_logits = _check_pair(teacher_logits, student_logits)
    actions = tf.argmax(tf.stop_gradient(teacher_logits), axis=-1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=student_logits)


def logits_mse(teacher_logits, student_logits):
    """Mean squared error between outputs, per example.

        loss = mean_a (s_a - t_a)^2

    The "MSE" loss on Q-values of Rusu et al. (2016), "Policy Distillation";
    on logits it is the model-compression loss of Ba & Caruana (2014).
    """
    teacher_logits, student_logits = _check_pair(teacher_logits, student_logits)
    return tf.reduce_mean(tf.square(student_logits - tf.stop_gradient(teacher_logits)), axis=-1)


FEATURE_DISTANCES = ("mse", "l2", "cosine")


def feature_distance(teacher_features, student_features, distance="mse"):
    """Distance between hidden features, per example (FitNets-style).

    ``student_features`` are the student's hidden activations already mapped
    to the teacher's width by a learned projection (Romero et al. 2015,
    "FitNets: Hints for Thin Deep Nets"). Over all non-batch axes:

        "mse":    mean (s - t)^2                 (FitNets' hint loss)
        "l2":     ||s - t||_2
        "cosine": 1 - <s, t> / (||s|| ||t||)

    Returns:
        ``[batch]`` float tensor; no gradient flows to ``teacher_features``.
    """
    if distance not in FEATURE_DISTANCES:
        raise ValueError(f"distance must be one of {FEATURE_DISTANCES}, got {distance!r}")
    t = tf.stop_gradient(tf.convert_to_tensor(teacher_features))
    s = tf.convert_to_tensor(student_features)
    t = tf.cast(t, s.dtype)
    if t.shape.rank is not None and s.shape.rank is not None and not t.shape.is_compatible_with(
            s.shape):
        raise ValueError(f"teacher features {t.shape} and projected student features "
                         f"{s.shape} differ in shape")
    t = tf.reshape(t, [tf.shape(t)[0], -1])
    s = tf.reshape(s, [tf.shape(s)[0], -1])
    if distance == "mse":
        return tf.reduce_mean(tf.square(s - t), axis=-1)
    if distance == "l2":
        return tf.sqrt(tf.reduce_sum(tf.square(s - t), axis=-1) + 1e-12)
    return 1.0 - tf.reduce_sum(tf.math.l2_normalize(s, -1) * tf.math.l2_normalize(t, -1), -1)


class _DistillationLoss(LossFunctionWrapper):
    """A pure loss function and its keyword arguments, saved as a config."""

    def get_config(self):
        return {**Loss.get_config(self), **self._fn_kwargs}


class TemperatureKL(_DistillationLoss):
    """The temperature-KL losses' base: ``factor * softmax_kl(t, s, T, S)`` per example.

    Subclasses say what T, S and the factor are (``kl_arguments``); the
    ``batch_mean`` they share is how ``tfkd.Distiller`` trains with them.
    """

    temperature = property(lambda self: self._fn_kwargs["temperature"])
    backend = property(lambda self: self._fn_kwargs["backend"])

    def kl_arguments(self):
        """(teacher temperature T, student temperature S, factor) of this loss."""
        raise NotImplementedError

    def batch_mean(self, teacher_logits, student_logits, sample_weight=None, scale=1.0):
        """The weighted batch mean of this loss and its per-example values, in one pass.

            mean = scale * sum_i w_i loss_i / n,   loss_i = factor * kl_i

        over the n examples (all axes but the last), the value of
        ``scale * reduce_mean(w * self.call(t, s))``, computed by
        ``tfkd.ops.softmax_kl_mean``: on the "cpp" backend the kernel writes
        each gradient row already multiplied by its factor, so differentiating
        the mean makes no second pass over the gradient.

        Args:
            teacher_logits, student_logits: ``[batch, ..., actions]``.
            sample_weight: optional ``[batch, ...]`` weights (no gradient).
            scale: a Python number multiplying the mean.

        Returns:
            (mean, per-example loss values ``[batch, ...]`` without gradient).
        """
        temperature, student_temperature, factor = self.kl_arguments()
        mean, kl = softmax_kl_mean(teacher_logits, student_logits, temperature,
                                   student_temperature, sample_weight=sample_weight,
                                   scale=scale * factor, backend=self.backend,
                                   return_per_example=True)
        return mean, kl * factor


@keras.saving.register_keras_serializable(package="tfkd")
class SoftTargetKL(TemperatureKL):
    """Hinton et al. (2015) soft-target KL; see ``soft_target_kl``.

    Args:
        temperature: T > 0.
        scale_by_temperature_squared: multiply by T^2 (default True).
        backend: ``tfkd.ops.softmax_kl`` backend.
        reduction, name, dtype: as for ``keras.losses.Loss``.
    """

    def __init__(self, temperature=1.0, scale_by_temperature_squared=True, backend="auto",
                 reduction="sum_over_batch_size", name="soft_target_kl", dtype=None):
        super().__init__(soft_target_kl, name=name, reduction=reduction, dtype=dtype,
                         temperature=_check_temperature(temperature),
                         scale_by_temperature_squared=bool(scale_by_temperature_squared),
                         backend=_check_backend(backend))

    def kl_arguments(self):
        scaled = self._fn_kwargs["scale_by_temperature_squared"]
        return self.temperature, self.temperature, self.temperature**2 if scaled else 1.0


@keras.saving.register_keras_serializable(package="tfkd")
class QValueKL(TemperatureKL):
    """Rusu et al. (2016) sharpened Q-value KL; see ``q_value_kl``.

    Args:
        temperature: tau > 0 applied to the teacher's Q-values (default 0.01).
        backend: ``tfkd.ops.softmax_kl`` backend.
        reduction, name, dtype: as for ``keras.losses.Loss``.
    """

    def __init__(self, temperature=0.01, backend="auto", reduction="sum_over_batch_size",
                 name="q_value_kl", dtype=None):
        super().__init__(q_value_kl, name=name, reduction=reduction, dtype=dtype,
                         temperature=_check_temperature(temperature),
                         backend=_check_backend(backend))

    def kl_arguments(self):
        return self.temperature, 1.0, 1.0


@keras.saving.register_keras_serializable(package="tfkd")
class GreedyActionNLL(_DistillationLoss):
    """NLL of the teacher's greedy action; see ``greedy_action_nll``."""

    def __init__(self, reduction="sum_over_batch_size", name="greedy_action_nll", dtype=None):
        super().__init__(greedy_action_nll, name=name, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="tfkd")
class LogitsMSE(_DistillationLoss):
    """MSE between teacher and student outputs; see ``logits_mse``."""

    def __init__(self, reduction="sum_over_batch_size", name="logits_mse", dtype=None):
        super().__init__(logits_mse, name=name, reduction=reduction, dtype=dtype)


_BY_NAME = {
    "soft_target_kl": SoftTargetKL,
    "kl_divergence": SoftTargetKL,  # on logits, unlike keras' "kl_divergence"
    "q_value_kl": QValueKL,
    "greedy_action_nll": GreedyActionNLL,
    "mse": LogitsMSE,
}


def get(identifier, temperature=None, backend=None):
    """A tfkd distillation loss from a name, or the given loss unchanged.

    Args:
        identifier: None (``SoftTargetKL``), one of "soft_target_kl",
            "kl_divergence" (the same, on logits), "q_value_kl",
            "greedy_action_nll", "mse", or a loss object / callable.
        temperature: the KL losses' temperature (None: their default).
        backend: the KL losses' ``softmax_kl`` backend (None: "auto").

    Raises:
        ValueError: an unknown name, or a temperature for a loss without one.
    """
    if identifier is None:
        identifier = "soft_target_kl"
    if not isinstance(identifier, str):
        return identifier
    if identifier not in _BY_NAME:
        raise ValueError(f"unknown distillation loss {identifier!r}; expected one of "
                         f"{sorted(_BY_NAME)} or a loss object")
    cls = _BY_NAME[identifier]
    kwargs = {}
    if temperature is not None:
        if not issubclass(cls, TemperatureKL):
            raise ValueError(f"the {identifier!r} loss takes no temperature, got {temperature}")
        kwargs["temperature"] = temperature
    if backend is not None and issubclass(cls, TemperatureKL):
        kwargs["backend"] = backend
    return cls(**kwargs)


def _check_pair(teacher_logits, student_logits):
    s = tf.convert_to_tensor(student_logits)
    t = tf.cast(tf.convert_to_tensor(teacher_logits), s.dtype)
    if t.shape.rank is not None and s.shape.rank is not None and not t.shape.is_compatible_with(
            s.shape):
        raise ValueError(f"teacher and student outputs differ in shape: {t.shape} vs {s.shape}")
    return t, s


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            0 < temperature < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
