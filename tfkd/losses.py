"""Distillation losses: pure functions plus thin ``keras.losses.Loss`` wrappers.

Every function takes the teacher's outputs first and the student's second,
both ``[batch, ..., actions]`` logits or Q-values, and returns one loss per
example (the last axis reduced). The wrappers take ``y_true = teacher
outputs`` and ``y_pred = student outputs``, so they also work in a plain
``model.compile(loss=...)``.

The fused batch-mean protocol: a loss object whose ``fused_batch_mean``
attribute is True promises a method

    batch_mean(teacher, student, sample_weight=None, scale=1.0)
        -> (scale * sum_i w_i loss_i / n, per-example values without gradient)

whose value equals ``scale * reduce_mean(w * loss.call(teacher, student))``
over the n rows (all axes but the last; ``sample_weight`` has their shape,
``scale`` is a Python number).
``tfkd.Distiller`` then trains with ``batch_mean`` instead of ``call``, which
lets a kernel fold the reduction (and its gradient) into one pass. The
temperature-KL losses opt in; a loss without the attribute (or with it False)
is reduced from ``call``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfkd.ops import BACKENDS, softmax_kl, softmax_kl_mean
from tfkd.ops.checks import check_temperature

__all__ = [
    "GreedyActionNLL",
    "LogitsMSE",
    "QValueKL",
    "SoftTargetKL",
    "TemperatureKL",
    "centered_logits_mse",
    "feature_distance",
    "get",
    "has_fused_batch_mean",
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


def centered_logits_mse(teacher_logits, student_logits):
    """Mean squared error between zero-meaned outputs, per example.

        loss = mean_a ((s_a − s̄) − (t_a − t̄))²,   s̄ = mean_a s_a, t̄ = mean_a t_a

    The soft-target KL's limit at high temperature: 2T² · KL(softmax(t/T) ‖
    softmax(s/T)) tends to it as T grows (Hinton et al. 2015, "Distilling the
    Knowledge in a Neural Network", §2.1). On Q-values it matches the
    teacher's advantages and leaves the state value free: a DQN student's
    own TD loss sets that.
    """
    teacher_logits, student_logits = _check_pair(teacher_logits, student_logits)
    teacher_logits = tf.stop_gradient(teacher_logits)
    difference = student_logits - teacher_logits
    return tf.reduce_mean(
        tf.square(difference - tf.reduce_mean(difference, axis=-1, keepdims=True)), axis=-1)


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


class _DistillationLoss(keras.losses.Loss):
    """A pure loss function and its keyword arguments, saved as a config.

    ``call(teacher, student)`` is ``fn(teacher, student, **kwargs)``: one
    value per example, which the ``reduction`` then reduces.
    """

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        return {**super().get_config(), **self._fn_kwargs}


def has_fused_batch_mean(loss):
    """Whether ``loss`` opts into the fused batch-mean protocol (module docstring)."""
    return getattr(loss, "fused_batch_mean", False) is True and callable(
        getattr(loss, "batch_mean", None))


class TemperatureKL(_DistillationLoss):
    """The temperature-KL losses' base: ``factor * softmax_kl(t, s, T, S)`` per example.

    Subclasses say what T, S and the factor are (``kl_arguments``). They opt
    into the fused batch-mean protocol (``fused_batch_mean = True``): the
    ``batch_mean`` they share is how ``tfkd.Distiller`` trains with them, and
    their ``call`` is not used there. A subclass that overrides ``call`` must
    say which one trains by setting ``fused_batch_mean`` in its own body:
    False to reduce its ``call`` per example, or True with a ``batch_mean``
    that matches its ``call``. Leaving it out is a ``TypeError`` when the
    class is defined, so a changed ``call`` is never silently ignored.
    """

    fused_batch_mean = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "call" in vars(cls) and "fused_batch_mean" not in vars(cls):
            raise TypeError(
                f"{cls.__name__} overrides call: set fused_batch_mean = False in its body to "
                f"train with that call, or True with a batch_mean that matches it")

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

    Opts into the fused batch-mean protocol (module docstring): the Distiller
    trains it through ``batch_mean``.

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

    Opts into the fused batch-mean protocol (module docstring): the Distiller
    trains it through ``batch_mean``.

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
    "q_value_kl": QValueKL,
    "greedy_action_nll": GreedyActionNLL,
    "mse": LogitsMSE,
}


# Keras' names of its KL on probabilities: tfkd's losses take logits, so these
# names would be ambiguous.
PROBABILITY_KL_NAMES = ("kl_divergence", "kld", "KLD", "kullback_leibler_divergence")


def get(identifier, temperature=None, backend=None):
    """A tfkd distillation loss from a name, or the given loss unchanged.

    Args:
        identifier: None (``SoftTargetKL``), one of "soft_target_kl",
            "q_value_kl", "greedy_action_nll", "mse", or a loss object /
            callable.
        temperature: the KL losses' temperature (None: their default).
        backend: the KL losses' ``softmax_kl`` backend (None: "auto").

    Raises:
        ValueError: an unknown name, a temperature for a loss without one,
            or a Keras loss on probabilities, which would read logits as
            probabilities: Keras' names for its KL ("kl_divergence", "kld",
            ...), ``keras.losses.kl_divergence``, ``KLDivergence()``,
            ``categorical_crossentropy`` and ``CategoricalCrossentropy()``
            without ``from_logits=True``.
    """
    if identifier is None:
        identifier = "soft_target_kl"
    if not isinstance(identifier, str):
        _reject_probability_loss(identifier)
        return identifier
    if identifier in PROBABILITY_KL_NAMES:
        raise ValueError(f"{identifier!r} is Keras' KL on probabilities, but distillation "
                         f"losses get logits: use tfkd.losses.SoftTargetKL (\"soft_target_kl\")")
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


def _reject_probability_loss(loss):
    if isinstance(loss, keras.losses.Loss):
        fn, from_logits = getattr(loss, "fn", None), loss.get_config().get("from_logits", False)
    else:
        fn, from_logits = loss, False
    if (isinstance(loss, keras.losses.KLDivergence) or fn is keras.losses.kl_divergence
            or (not from_logits and (isinstance(loss, keras.losses.CategoricalCrossentropy)
                                     or fn is keras.losses.categorical_crossentropy))):
        name = getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)
        raise ValueError(f"the Keras loss {name!r} expects probabilities, but distillation "
                         f"losses get logits: use tfkd.losses.SoftTargetKL (\"soft_target_kl\")")


def _check_pair(teacher_logits, student_logits):
    s = tf.convert_to_tensor(student_logits)
    t = tf.cast(tf.convert_to_tensor(teacher_logits), s.dtype)
    if t.shape.rank is not None and s.shape.rank is not None and not t.shape.is_compatible_with(
            s.shape):
        raise ValueError(f"teacher and student outputs differ in shape: {t.shape} vs {s.shape}")
    return t, s


def _check_temperature(temperature):
    return check_temperature(temperature, "temperature")


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
