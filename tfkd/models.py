"""Teacher and student networks that output logits or Q-values.

The builders return plain functional ``keras.Model`` objects with no softmax
at the end, so they save and load as ``.keras`` files and expose their hidden
layers by name (for feature distillation). :func:`build_teacher` and
:func:`build_student` hold tfkd's default architectures, for vector
observations (MLPs) and for Atari frames (Nature CNNs).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras

__all__ = [
    "ATARI_STUDENT_DENSE_UNITS",
    "ATARI_STUDENT_FILTERS",
    "ATARI_TEACHER_DENSE_UNITS",
    "NATURE_CNN_FILTERS",
    "STUDENT_HIDDEN_UNITS",
    "TEACHER_HIDDEN_UNITS",
    "build_mlp",
    "build_nature_cnn",
    "build_student",
    "build_teacher",
    "count_params",
]

# Default architectures. Vector observations: an MLP teacher and a student
# about 1/70 of its size. Atari: the Nature CNN teacher (Mnih et al. 2015)
# and a student with half its filters and a quarter of its dense units.
TEACHER_HIDDEN_UNITS = (256, 256)
STUDENT_HIDDEN_UNITS = (32,)
NATURE_CNN_FILTERS = (32, 64, 64)
ATARI_TEACHER_DENSE_UNITS = 512
ATARI_STUDENT_FILTERS = (16, 32, 32)
ATARI_STUDENT_DENSE_UNITS = 128


def build_mlp(observation_shape, num_actions, hidden_units=(64, 64), activation="relu",
              name="mlp", dropout=0.0) -> keras.Model:
    """A multilayer perceptron for vector observations.

    Hidden layers are named ``hidden_0``, ``hidden_1``, ...; the output layer
    ``logits`` is linear (logits or Q-values, no softmax).

    Args:
        observation_shape: shape of one observation, e.g. ``(4,)``; inputs of
            higher rank are flattened.
        num_actions: number of outputs (actions or classes).
        hidden_units: width of each hidden layer; ``()`` gives a linear model.
        activation: activation of the hidden layers.
        name: the model's name.
        dropout: dropout rate after each hidden layer (0: none), e.g. for a
            regularised teacher as in Hinton et al. (2015).

    Returns:
        A functional ``keras.Model`` mapping ``[batch, *observation_shape]`` to
        ``[batch, num_actions]``.
    """
    _check_positive("num_actions", num_actions)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    for units in hidden_units:
        _check_positive("hidden_units", units)
    inputs = keras.Input(shape=tuple(observation_shape), name="observations")
    h = keras.layers.Flatten(name="flatten")(inputs) if len(observation_shape) > 1 else inputs
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
        if dropout:
            h = keras.layers.Dropout(dropout, name=f"dropout_{i}")(h)
    outputs = keras.layers.Dense(num_actions, name="logits", dtype=_float32_if_mixed())(h)
    return keras.Model(inputs, outputs, name=name)


def build_nature_cnn(num_actions, observation_shape=(84, 84, 4), filters=NATURE_CNN_FILTERS,
                     dense_units=ATARI_TEACHER_DENSE_UNITS, name="nature_cnn") -> keras.Model:
    """The Nature-DQN convolutional network (Mnih et al. 2015).

    Three convolutions (8x8 stride 4, 4x4 stride 2, 3x3 stride 1, ReLU), a
    dense layer and a linear output. The input is uint8 frames; the model
    scales them to [0, 1] itself. Layers are named ``conv_0..2``, ``hidden``
    and ``logits``.

    Args:
        num_actions: number of Q-values / logits.
        observation_shape: stacked frames, height x width x channels.
        filters: the three convolutions' filter counts.
        dense_units: width of the dense layer.
        name: the model's name.

    Returns:
        A functional ``keras.Model`` mapping uint8 ``[batch, *observation_shape]``
        to float ``[batch, num_actions]``.
    """
    _check_positive("num_actions", num_actions)
    _check_positive("dense_units", dense_units)
    if len(filters) != 3:
        raise ValueError(f"filters must give the three convolutions' widths, got {filters!r}")
    inputs = keras.Input(shape=tuple(observation_shape), dtype="uint8", name="frames")
    h = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for i, (width, kernel, stride) in enumerate(zip(filters, (8, 4, 3), (4, 2, 1))):
        _check_positive("filters", width)
        h = keras.layers.Conv2D(width, kernel, strides=stride, activation="relu",
                                name=f"conv_{i}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(dense_units, activation="relu", name="hidden")(h)
    outputs = keras.layers.Dense(num_actions, name="logits", dtype=_float32_if_mixed())(h)
    return keras.Model(inputs, outputs, name=name)


def build_teacher(observation_shape, num_actions, atari: bool,
                  hidden_units: Sequence[int] | None = None, name="teacher") -> keras.Model:
    """tfkd's default Keras teacher: an MLP, or the Nature CNN for Atari.

    Args:
        observation_shape: shape of one observation, e.g. ``(4,)`` or ``(84, 84, 4)``.
        num_actions: number of Q-values / logits.
        atari: build the Nature CNN (:func:`build_nature_cnn`, its default
            sizes) for stacked uint8 frames instead of an MLP.
        hidden_units: the MLP's hidden layers (default
            :data:`TEACHER_HIDDEN_UNITS`); Atari: one value, the dense layer's
            width (default :data:`ATARI_TEACHER_DENSE_UNITS`).
        name: the model's name.
    """
    return _build_default(observation_shape, num_actions, atari, hidden_units, name,
                          TEACHER_HIDDEN_UNITS, NATURE_CNN_FILTERS, ATARI_TEACHER_DENSE_UNITS)


def build_student(observation_shape, num_actions, atari: bool,
                  hidden_units: Sequence[int] | None = None, name="student") -> keras.Model:
    """tfkd's default student: a small MLP, or a small Nature CNN for Atari.

    Args:
        observation_shape: shape of one observation.
        num_actions: number of logits.
        atari: a Nature CNN with :data:`ATARI_STUDENT_FILTERS` instead of an MLP.
        hidden_units: the MLP's hidden layers (default
            :data:`STUDENT_HIDDEN_UNITS`); Atari: one value, the dense layer's
            width (default :data:`ATARI_STUDENT_DENSE_UNITS`).
        name: the model's name.
    """
    return _build_default(observation_shape, num_actions, atari, hidden_units, name,
                          STUDENT_HIDDEN_UNITS, ATARI_STUDENT_FILTERS, ATARI_STUDENT_DENSE_UNITS)


def _build_default(observation_shape, num_actions, atari, hidden_units, name, mlp_hidden,
                   cnn_filters, cnn_dense_units) -> keras.Model:
    if atari:
        return build_nature_cnn(num_actions, observation_shape, cnn_filters,
                                _atari_dense_units(hidden_units, cnn_dense_units), name=name)
    hidden = mlp_hidden if hidden_units is None else tuple(hidden_units)
    return build_mlp(observation_shape, num_actions, hidden_units=hidden, name=name)


def _atari_dense_units(hidden_units, default: int) -> int:
    if not hidden_units:
        return default
    if len(hidden_units) != 1:
        raise ValueError(
            f"an Atari network has one dense layer: give one width, got {tuple(hidden_units)!r}")
    return hidden_units[0]


def count_params(model) -> int:
    """Number of scalar parameters (trainable and not).

    Counts a Keras model's ``weights`` (Keras 3 or Keras 2), or the
    ``variables`` of anything else that has them (a ``tf.Module``, a TF-Agents
    network, ``tfkd.agents.QNetworkTeacher``). A variable shared by several
    layers counts once; an unbuilt Keras model has 0.

    Raises:
        TypeError: if ``model`` has neither ``weights`` nor ``variables``.
    """
    variables = getattr(model, "weights", None)
    if variables is None:
        variables = getattr(model, "variables", None)
    if variables is None:
        raise TypeError(
            f"cannot count the parameters of {type(model).__name__}: it has neither "
            "weights nor variables.")
    unique = {id(variable): variable for variable in variables}.values()
    return int(sum(math.prod(int(dim) for dim in variable.shape) for variable in unique))


def _float32_if_mixed():
    # Under a mixed policy the logits stay float32 (the Keras mixed-precision
    # guide's advice), so softmax and losses see full-precision inputs.
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be positive integers, got {value!r}")
