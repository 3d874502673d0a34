"""Load an exported artefact and run it: one call, ``observations -> (actions, logits)``.

Each format runs in the runtime a user deploys it with: TFLite files in the
LiteRT interpreter (``ai-edge-litert``), a SavedModel through its
``serving_default`` signature, a ``.keras`` file in Keras. The TFLite path
imports no TensorFlow, so a server of a TFLite artefact starts in a fraction
of the time and memory; that is why TensorFlow and Keras are imported only by
the formats that need them.

An int8 model whose input or output tensors are themselves int8 (as Edge TPU
compilers want) is fed and read through the tensors' quantisation
parameters: ``real = scale · (q − zero_point)``.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

FORMATS = ("keras", "savedmodel", "tflite", "tflite-int8")


class Artefact:
    """An exported policy network, callable on a batch of observations.

    Attributes:
        format: one of :data:`FORMATS`.
        path: the file or folder it was loaded from.
        observation_shape: the shape of one observation.
        num_actions: the number of discrete actions (logits per observation).
    """

    def __init__(self, format: str, path: str, logits_fn: Callable[[np.ndarray], np.ndarray],
                 observation_shape: tuple[int, ...], num_actions: int):
        self.format = format
        self.path = path
        self.observation_shape = tuple(observation_shape)
        self.num_actions = int(num_actions)
        self._logits_fn = logits_fn

    def logits(self, observations: np.ndarray) -> np.ndarray:
        """float32 logits [batch, num_actions] of float32 observations [batch, *observation_shape]."""
        if type(observations) is not np.ndarray or observations.dtype != np.float32:
            observations = np.asarray(observations, dtype=np.float32)
        if observations.shape[1:] != self.observation_shape:
            raise ValueError(f"expected observations of shape [batch, "
                             f"{', '.join(map(str, self.observation_shape))}], "
                             f"got {list(observations.shape)}")
        logits = self._logits_fn(observations)
        if type(logits) is not np.ndarray or logits.dtype != np.float32:
            logits = np.asarray(logits, dtype=np.float32)
        return logits

    def __call__(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions int64 [batch], logits float32 [batch, num_actions]); greedy actions."""
        logits = self.logits(observations)
        return logits.argmax(axis=-1).astype(np.int64, copy=False), logits


def load(path: str | os.PathLike, format: str | None = None) -> Artefact:
    """Loads an artefact; the format is taken from the path when not given.

    Args:
        path: a ``.tflite`` file, a ``.keras`` file or a SavedModel folder.
        format: one of :data:`FORMATS`; by default ``.keras`` -> "keras",
            ``*int8*.tflite`` -> "tflite-int8", ``.tflite`` -> "tflite", a
            folder -> "savedmodel".

    Raises:
        FileNotFoundError: nothing is at ``path``.
        ValueError: an unknown format, or a file that is not a valid artefact.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no exported model at {path}")
    format = format or _format_of(path)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    loader = {"keras": _load_keras, "savedmodel": _load_saved_model,
              "tflite": _load_tflite, "tflite-int8": _load_tflite}[format]
    return loader(path, format)


def _format_of(path: str) -> str:
    if os.path.isdir(path):
        return "savedmodel"
    name = os.path.basename(path)
    if name.endswith(".keras"):
        return "keras"
    if name.endswith(".tflite"):
        return "tflite-int8" if "int8" in name else "tflite"
    raise ValueError(f"cannot tell the format of {path}; pass one of {', '.join(FORMATS)}")


def _load_keras(path: str, format: str) -> Artefact:
    import keras  # only this format needs Keras

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # a corrupt or foreign file: say which, in one line
        raise ValueError(f"{path} is not a loadable .keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    predict = _compiled(model)
    return Artefact(format, path, lambda x: predict(x).numpy(),
                    tuple(model.input_shape[1:]), int(model.output_shape[-1]))


def _compiled(model):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def predict(observations):
        return model(observations, training=False)

    return predict


def _load_saved_model(path: str, format: str) -> Artefact:
    import tensorflow as tf  # only this format needs TensorFlow

    try:
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
    except Exception as error:
        raise ValueError(f"{path} is not a SavedModel with a serving_default signature "
                         f"({type(error).__name__})") from None
    spec = signature.structured_input_signature[1]["observations"]
    num_actions = int(signature.structured_outputs["logits"].shape[-1])

    def logits(observations):
        return signature(observations=tf.constant(observations))["logits"].numpy()

    return Artefact(format, path, logits, tuple(spec.shape[1:]), num_actions)


def _load_tflite(path: str, format: str) -> Artefact:
    from ai_edge_litert.interpreter import Interpreter  # the standalone LiteRT runtime

    with open(path, "rb") as file:
        content = file.read()
    try:
        probe = Interpreter(model_content=content)
    except Exception as error:
        raise ValueError(f"{path} is not a valid TFLite model ({type(error).__name__})") from None
    input_shape = tuple(int(d) for d in probe.get_input_details()[0]["shape"][1:])
    num_actions = int(probe.get_output_details()[0]["shape"][-1])
    # One runner per power-of-two batch size, the batch padded with zero rows
    # up to it: resizing and re-allocating on every call would cost more than
    # running this small a network, and one runner per distinct size would
    # let a server's callers grow the cache without bound. Rows are
    # independent in inference, so the padding changes no answer. Each runner
    # keeps its tensor indices and quantisation parameters: reading the
    # interpreter's details costs several microseconds a call, more than the
    # network itself.
    runners: dict[int, Callable[[np.ndarray], np.ndarray]] = {}

    def logits(observations):
        batch = observations.shape[0]
        runner = runners.get(batch)
        if runner is not None:  # a power of two already run: no padding, no slicing
            return runner(observations)
        size = 1 << max(batch - 1, 0).bit_length()
        runner = runners.get(size)
        if runner is None:
            runner = runners[size] = _tflite_runner(content, [size, *input_shape])
        if size != batch:
            padded = np.zeros((size, *input_shape), observations.dtype)
            padded[:batch] = observations
            observations = padded
        return runner(observations)[:batch]

    return Artefact(format, path, logits, input_shape, num_actions)


def _tflite_runner(content: bytes, input_shape: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], input_shape)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    input_index, output_index = input_detail["index"], output_detail["index"]
    set_tensor, invoke, get_tensor = (interpreter.set_tensor, interpreter.invoke,
                                      interpreter.get_tensor)
    if input_detail["dtype"] == np.float32 and output_detail["dtype"] == np.float32:
        def run(observations):
            set_tensor(input_index, observations)
            invoke()
            return get_tensor(output_index)
    else:
        def run(observations):
            set_tensor(input_index, _quantize(observations, input_detail))
            invoke()
            return _dequantize(get_tensor(output_index), output_detail)
    return run


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def from_model(model, observation_shape: tuple[int, ...], num_actions: int,
               path: str = "<in memory>", eager: bool = False) -> Artefact:
    """A network already in memory (a Keras model, a TF-Agents teacher) as an :class:`Artefact`.

    Args:
        model: callable observations -> ``[batch, num_actions]`` outputs.
        observation_shape, num_actions: its input and output shapes.
        path: where it came from, for the report.
        eager: call ``model(observations)`` eagerly, as a user does; otherwise
            through a ``tf.function`` (how :func:`load` runs a ``.keras`` file).
    """
    if eager:
        def logits(observations):
            return np.asarray(model(observations, training=False))
    else:
        predict = _compiled(model)

        def logits(observations):
            return predict(observations).numpy()
    return Artefact("keras", path, logits, tuple(observation_shape), int(num_actions))
