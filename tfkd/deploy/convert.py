"""Converting a Keras 3 student into deployable artefacts: SavedModel and TFLite.

- :func:`save_serving_model`: a SavedModel whose ``serving_default``
  signature maps ``observations`` float32 ``[batch, *obs]`` to
  ``{"action": int64 [batch], "logits": float32 [batch, A]}``, written into
  TensorFlow Serving's ``<base>/<version>/`` layout by the caller.
- :func:`tflite_float`: TFLite with float32 weights and activations.
- :func:`tflite_int8`: full-integer post-training quantisation (Jacob et al.
  2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference"): int8 weights (per tensor or per channel),
  int8 activations with ranges calibrated on representative observations,
  int32 biases; the float32 input and output are quantised and dequantised
  inside the model, so it is a drop-in replacement for the float file.
- :func:`layer_dtypes`: what each fully connected / convolution op of a TFLite
  file computes with, read back from the interpreter (the int8 check).

None of the artefacts refers to tfkd or its custom op: the student is a plain
stack of Keras layers, traced into TensorFlow's own ops.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import tensorflow as tf

#: Observations drawn for the int8 calibration (the representative dataset).
CALIBRATION_SAMPLES = 1_000
#: Ops whose weights the int8 check reads.
_WEIGHTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def _forward(model, observation_shape: tuple[int, ...]):
    """The student's inference pass as a concrete function with a free batch axis."""

    @tf.function(input_signature=[tf.TensorSpec((None, *observation_shape), tf.float32,
                                                name="observations")])
    def logits(observations):
        return tf.cast(model(observations, training=False), tf.float32)

    return logits


class _ServingModule(tf.Module):
    """The student and its serving signature (tracked, so its weights are saved)."""

    def __init__(self, model, observation_shape: tuple[int, ...]):
        super().__init__()
        self.model = model
        forward = _forward(model, observation_shape)

        @tf.function(input_signature=forward.input_signature)
        def serve(observations):
            logits = forward(observations)
            return {"action": tf.argmax(logits, axis=-1, output_type=tf.int64), "logits": logits}

        self.serve = serve


def save_serving_model(model, path: str | os.PathLike, observation_shape: tuple[int, ...]) -> None:
    """Writes ``model`` as a SavedModel with the ``serving_default`` signature.

    Args:
        model: the student (Keras 3), observations -> logits.
        path: the version folder, e.g. ``DIR/saved_model/1`` (must not exist).
        observation_shape: the shape of one observation.
    """
    module = _ServingModule(model, tuple(observation_shape))
    tf.saved_model.save(module, os.fspath(path), signatures={"serving_default": module.serve})


def tflite_float(model, observation_shape: tuple[int, ...]) -> bytes:
    """The student as a float32 TFLite flatbuffer."""
    return _convert(_converter(model, observation_shape))


def tflite_int8(model, observation_shape: tuple[int, ...], calibration: np.ndarray,
                samples: int = CALIBRATION_SAMPLES, seed: int = 0,
                per_channel: bool = False) -> bytes:
    """The student as a full-integer int8 TFLite flatbuffer.

    Activation ranges are the min / max the converter sees over ``samples``
    observations drawn without replacement from ``calibration``; weights are
    quantised symmetrically, ``q = round(w / s)`` with ``s = max|w| / 127``
    over the whole tensor (or per output channel).

    Args:
        model: the student (Keras 3).
        observation_shape: the shape of one observation.
        calibration: ``[n, *observation_shape]`` observations of the env the
            student will act in (a distillation buffer or its own rollouts).
        samples: most observations used.
        seed: which ones, when ``calibration`` holds more.
        per_channel: one weight scale per output channel (TFLite's default)
            instead of one per tensor: a finer grid for a larger file (each
            scale and zero point costs 12 bytes, a 64x64 MLP's 3 KB of its
            11 KB, so small students default to one per tensor).

    Raises:
        ValueError: ``calibration`` is empty, of the wrong shape, or not finite.
    """
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim < 1 or calibration.shape[1:] != tuple(observation_shape) \
            or len(calibration) == 0:
        raise ValueError(f"calibration observations must be [n > 0, "
                         f"{', '.join(map(str, observation_shape))}], got "
                         f"{list(calibration.shape)}")
    if not np.all(np.isfinite(calibration)):
        raise ValueError("calibration observations hold NaN or infinite values")
    if len(calibration) > samples:
        chosen = np.random.default_rng(seed).choice(len(calibration), samples, replace=False)
        calibration = calibration[np.sort(chosen)]

    def representative_dataset():
        for observation in calibration:
            yield [observation[None]]

    converter = _converter(model, observation_shape)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # The converter's only switch for per-tensor weights is this attribute.
    converter._experimental_disable_per_channel = not per_channel
    return _convert(converter)


def tflite_from_fake_quant(model) -> bytes:
    """Full-integer int8 TFLite of a quantisation-aware model (:mod:`tfkd.deploy.compression`).

    The ranges come from the model's own fake-quant ops (its trained
    activation ranges and weight grid), not from a calibration set.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # No representative dataset, so no TFLITE_BUILTINS_INT8 either (the
    # converter demands one with it); the exporter checks every weighted op
    # computes in int8 (layer_dtypes).
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _convert(converter)


def _converter(model, observation_shape: tuple[int, ...]) -> tf.lite.TFLiteConverter:
    # from_keras_model freezes the Keras 3 variables into constants; a concrete
    # function of the model would keep them as resource variables, which the
    # int8 calibrator cannot read.
    del observation_shape  # the model's own input shape, batch axis free
    return tf.lite.TFLiteConverter.from_keras_model(model)


def _convert(converter: tf.lite.TFLiteConverter) -> bytes:
    # Keras' export, which the converter runs, prints the traced signature to
    # stdout: a page of tensor specs in the middle of the command's output.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def layer_dtypes(content: bytes) -> list[dict]:
    """The dtypes each weighted op of a TFLite model computes with.

    Returns:
        One ``{"op", "input", "weights", "bias"}`` per fully connected or
        convolution op, in execution order, each a NumPy dtype name (``bias``
        None for an op without one).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}

    def dtype(index: int) -> str | None:
        return None if index < 0 else np.dtype(tensors[index]["dtype"]).name

    layers = []
    # The interpreter's op list is the only public-facing view of the graph
    # (the flatbuffer schema is not shipped with LiteRT).
    for op in interpreter._get_ops_details():
        if op["op_name"] in _WEIGHTED_OPS:
            inputs = list(op["inputs"])
            layers.append({"op": op["op_name"], "input": dtype(inputs[0]),
                           "weights": dtype(inputs[1]),
                           "bias": dtype(inputs[2]) if len(inputs) > 2 else None})
    return layers
