"""The TFLite runtime under a server's traffic: any batch size, answers equal to a
float64 NumPy forward pass of the same weights."""

import numpy as np

from tfkd.deploy import runtime


def _reference(export_dir, observations):
    import keras

    model = keras.saving.load_model(export_dir / "student.keras", safe_mode=True)
    (w1, b1), (w2, b2) = (layer.get_weights() for layer in model.layers)
    hidden = np.maximum(observations.astype(np.float64) @ w1 + b1, 0.0)
    return hidden @ w2 + b2


def test_every_batch_size_answers_like_the_float64_reference(export_v1):
    artefact = runtime.load(export_v1 / "student.tflite")
    rng = np.random.default_rng(0)
    for batch in (1, 2, 3, 5, 8, 13, 64, 65, 100, 1000, 3, 1):
        observations = rng.normal(size=(batch, 4)).astype(np.float32)
        actions, logits = artefact(observations)
        expected = _reference(export_v1, observations)
        assert logits.shape == (batch, 2) and actions.shape == (batch,)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(actions, np.argmax(logits, axis=-1))


def test_interpreters_are_kept_per_power_of_two_batch(export_v1):
    artefact = runtime.load(export_v1 / "student.tflite")
    for batch in range(1, 300):
        artefact(np.zeros((batch, 4), np.float32))
    (interpreters,) = [cell.cell_contents for cell in artefact._logits_fn.__closure__
                       if isinstance(cell.cell_contents, dict)]
    assert sorted(interpreters) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
