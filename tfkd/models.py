"""Teacher and student networks that output logits or Q-values.

The builders return plain functional ``keras.Model`` objects with no softmax
at the end, so they save and load as ``.keras`` files and expose their hidden
layers by name (for feature distillation). :func:`build_teacher` and
:func:`build_student` hold tfkd's default architectures, for vector
observations (MLPs) and for Atari frames (Nature CNNs).
:func:`build_multi_task_student` builds one student for several tasks (Rusu
et al. 2016), :func:`task_model` its network for one task.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras

__all__ = [
    "ATARI_STUDENT_DENSE_UNITS",
    "ATARI_STUDENT_FILTERS",
    "ATARI_TEACHER_DENSE_UNITS",
    "MINATAR_FILTERS",
    "MINATAR_STUDENT_DENSE_UNITS",
    "MINATAR_STUDENT_FILTERS",
    "MINATAR_TEACHER_DENSE_UNITS",
    "NATURE_CNN_FILTERS",
    "STUDENT_HIDDEN_UNITS",
    "TEACHER_HIDDEN_UNITS",
    "build_minatar_cnn",
    "build_mlp",
    "build_multi_task_student",
    "build_nature_cnn",
    "build_student",
    "build_teacher",
    "count_params",
    "task_model",
    "task_names",
]

# Default architectures. Vector observations: an MLP teacher and a student
# about 1/70 of its size. Atari: the Nature CNN teacher (Mnih et al. 2015)
# and a student with half its filters and a quarter of its dense units.
# Other frames (MinAtar): the MinAtar network, and a smaller one.
TEACHER_HIDDEN_UNITS = (256, 256)
STUDENT_HIDDEN_UNITS = (32,)
NATURE_CNN_FILTERS = (32, 64, 64)
ATARI_TEACHER_DENSE_UNITS = 512
ATARI_STUDENT_FILTERS = (16, 32, 32)
ATARI_STUDENT_DENSE_UNITS = 128
# MinAtar (Young & Tian 2019): their network for the teacher, a student about 1/8 of it.
MINATAR_FILTERS = 16
MINATAR_TEACHER_DENSE_UNITS = 128
MINATAR_STUDENT_FILTERS = 8
MINATAR_STUDENT_DENSE_UNITS = 32


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


def build_minatar_cnn(observation_shape, num_actions, filters=MINATAR_FILTERS,
                      dense_units=MINATAR_TEACHER_DENSE_UNITS, name="minatar_cnn") -> keras.Model:
    """The MinAtar network (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed").

    One 3x3 convolution (stride 1, ReLU), a dense layer and a linear output,
    for small boolean frames (MinAtar's 10x10xC, C differing by game). The
    model casts the frames to float itself. Layers are named ``conv_0``,
    ``hidden`` and ``logits``.

    Args:
        observation_shape: height x width x channels.
        num_actions: number of Q-values / logits.
        filters: the convolution's filters.
        dense_units: width of the dense layer.
        name: the model's name.
    """
    _check_positive("num_actions", num_actions)
    _check_positive("filters", filters)
    _check_positive("dense_units", dense_units)
    if len(observation_shape) != 3:
        raise ValueError(f"the MinAtar network takes frames [height, width, channels], got "
                         f"{tuple(observation_shape)}")
    inputs = keras.Input(shape=tuple(observation_shape), name="frames")
    h = keras.layers.Conv2D(filters, 3, activation="relu", name="conv_0")(
        keras.ops.cast(inputs, "float32"))
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(dense_units, activation="relu", name="hidden")(h)
    outputs = keras.layers.Dense(num_actions, name="logits", dtype=_float32_if_mixed())(h)
    return keras.Model(inputs, outputs, name=name)


def build_teacher(observation_shape, num_actions, atari: bool,
                  hidden_units: Sequence[int] | None = None, name="teacher") -> keras.Model:
    """tfkd's default Keras teacher: an MLP, the Nature CNN for Atari, the
    MinAtar network for other frames.

    Args:
        observation_shape: shape of one observation, e.g. ``(4,)``,
            ``(84, 84, 4)`` or MinAtar's ``(10, 10, 4)``.
        num_actions: number of Q-values / logits.
        atari: build the Nature CNN (:func:`build_nature_cnn`, its default
            sizes) for stacked uint8 frames. Frames without ``atari`` get
            :func:`build_minatar_cnn` (:data:`MINATAR_FILTERS`).
        hidden_units: the MLP's hidden layers (default
            :data:`TEACHER_HIDDEN_UNITS`); frames: one value, the dense layer's
            width (default :data:`ATARI_TEACHER_DENSE_UNITS` for Atari,
            :data:`MINATAR_TEACHER_DENSE_UNITS` otherwise).
        name: the model's name.
    """
    return _build_default(observation_shape, num_actions, atari, hidden_units, name,
                          TEACHER_HIDDEN_UNITS, NATURE_CNN_FILTERS, ATARI_TEACHER_DENSE_UNITS,
                          MINATAR_FILTERS, MINATAR_TEACHER_DENSE_UNITS)


def build_student(observation_shape, num_actions, atari: bool,
                  hidden_units: Sequence[int] | None = None, name="student") -> keras.Model:
    """tfkd's default student: a small MLP, a small Nature CNN for Atari, a
    small MinAtar network for other frames.

    Args:
        observation_shape: shape of one observation.
        num_actions: number of logits.
        atari: a Nature CNN with :data:`ATARI_STUDENT_FILTERS`. Frames without
            ``atari`` get :func:`build_minatar_cnn` with
            :data:`MINATAR_STUDENT_FILTERS`.
        hidden_units: the MLP's hidden layers (default
            :data:`STUDENT_HIDDEN_UNITS`); frames: one value, the dense layer's
            width (default :data:`ATARI_STUDENT_DENSE_UNITS` for Atari,
            :data:`MINATAR_STUDENT_DENSE_UNITS` otherwise).
        name: the model's name.
    """
    return _build_default(observation_shape, num_actions, atari, hidden_units, name,
                          STUDENT_HIDDEN_UNITS, ATARI_STUDENT_FILTERS, ATARI_STUDENT_DENSE_UNITS,
                          MINATAR_STUDENT_FILTERS, MINATAR_STUDENT_DENSE_UNITS)


def build_multi_task_student(tasks: Mapping[str, tuple[Sequence[int], int]], trunk_units=(64, 64),
                             adapter_units=64, adapter_channels=16, conv_filters=16,
                             name="multi_task_student") -> keras.Model:
    """One student for several tasks: a small input adapter per task, a shared
    trunk, an output head per task (Rusu et al. 2016, "Policy Distillation", §4).

    Vector observations: adapter ``Dense(adapter_units, relu)``, trunk of
    ``Dense`` layers. Frames ``[height, width, channels]`` (MinAtar, channels
    differing by game): adapter a 1x1 convolution to ``adapter_channels``
    channels, trunk ``Conv2D(conv_filters, 3)`` then the ``Dense`` layers.
    Each head is a linear ``Dense(num_actions)``.

    The model has one input and one output per task, in the order of
    ``tasks``; input ``k`` is named :func:`task_input_name` of the task's env id,
    so the saved ``.keras`` file knows its tasks (:func:`task_names`), and
    :func:`task_model` gives the ordinary single-task network of one of them.

    Args:
        tasks: ``{env_id: (observation_shape, num_actions)}``.
        trunk_units: widths of the shared dense layers.
        adapter_units: output width of a vector task's adapter.
        adapter_channels: output channels of a frame task's adapter.
        conv_filters: filters of the trunk's convolution (frames only).
        name: the model's name.

    Raises:
        ValueError: no task, vector and frame tasks mixed, frames of
            different heights or widths, or a non-positive size.
    """
    if not tasks:
        raise ValueError("tasks must name at least one task")
    ranks = {len(shape) for shape, _ in tasks.values()}
    if ranks not in ({1}, {3}):
        raise ValueError("the tasks' observations must all be vectors or all be frames "
                         f"[height, width, channels]; got shapes "
                         f"{[tuple(shape) for shape, _ in tasks.values()]}")
    frames = ranks == {3}
    if frames and len({tuple(shape[:2]) for shape, _ in tasks.values()}) > 1:
        raise ValueError("the tasks' frames must share height and width (the adapters change "
                         f"channels only); got {[tuple(s) for s, _ in tasks.values()]}")
    for units in (*trunk_units, adapter_units, adapter_channels, conv_filters):
        _check_positive("layer sizes", units)
    if frames:
        trunk = [keras.layers.Conv2D(conv_filters, 3, padding="same", activation="relu",
                                     name="trunk_conv"), keras.layers.Flatten(name="flatten")]
    else:
        trunk = []
    trunk += [keras.layers.Dense(units, activation="relu", name=f"trunk_{i}")
              for i, units in enumerate(trunk_units)]
    inputs, outputs = [], []
    for k, (env_id, (shape, num_actions)) in enumerate(tasks.items()):
        _check_positive("num_actions", num_actions)
        x = keras.Input(shape=tuple(shape), name=task_input_name(env_id))
        if frames:
            h = keras.layers.Conv2D(adapter_channels, 1, activation="relu",
                                    name=f"adapter_{k}")(keras.ops.cast(x, "float32"))
        else:
            h = keras.layers.Dense(adapter_units, activation="relu", name=f"adapter_{k}")(x)
        for layer in trunk:
            h = layer(h)
        outputs.append(keras.layers.Dense(num_actions, name=f"head_{k}",
                                          dtype=_float32_if_mixed())(h))
        inputs.append(x)
    return keras.Model(inputs, outputs, name=name)


def task_input_name(env_id: str) -> str:
    """The input name of ``env_id``'s task (Keras names cannot hold "/": "A/B" -> "A__B")."""
    return env_id.replace("/", "__")


def task_names(model: keras.Model) -> list[str]:
    """The env ids of a multi-task student's tasks, in order (from its input names)."""
    return [tensor.name.replace("__", "/") for tensor in model.inputs]


def task_model(model: keras.Model, env_id: str) -> keras.Model:
    """The single-task network of ``env_id`` inside a multi-task student.

    It shares the student's layers (training one trains the other) and is an
    ordinary ``keras.Model``: observations ``[batch, *shape]`` to logits.

    Raises:
        ValueError: ``env_id`` is not one of the student's tasks.
    """
    names = task_names(model)
    if env_id not in names:
        raise ValueError(f"the student has no task {env_id!r}; its tasks: {', '.join(names)}")
    k = names.index(env_id)
    return keras.Model(model.inputs[k], model.outputs[k], name=task_input_name(env_id))


def _build_default(observation_shape, num_actions, atari, hidden_units, name, mlp_hidden,
                   cnn_filters, cnn_dense_units, minatar_filters, minatar_dense_units
                   ) -> keras.Model:
    if atari:
        return build_nature_cnn(num_actions, observation_shape, cnn_filters,
                                _atari_dense_units(hidden_units, cnn_dense_units), name=name)
    if len(observation_shape) == 3:  # small frames that are not Atari's: MinAtar
        return build_minatar_cnn(observation_shape, num_actions, minatar_filters,
                                 _atari_dense_units(hidden_units, minatar_dense_units), name=name)
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
