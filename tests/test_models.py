import keras
import numpy as np
import pytest

from tfkd import models


def test_mlp_outputs_logits_and_counts_parameters():
    model = models.build_mlp((5,), 3, hidden_units=(7, 6))
    assert [l.name for l in model.layers[1:]] == ["hidden_0", "hidden_1", "logits"]
    assert models.count_params(model) == (5 * 7 + 7) + (7 * 6 + 6) + (6 * 3 + 3)
    out = model.predict(np.random.default_rng(0).normal(size=(32, 5)) * 10, verbose=0)
    assert out.shape == (32, 3)
    assert (out < 0).any() and not np.allclose(out.sum(-1), 1.0)  # no softmax


def test_mlp_flattens_matrix_observations():
    model = models.build_mlp((4, 2), 2, hidden_units=())
    assert models.count_params(model) == 8 * 2 + 2


def test_nature_cnn_parameters_and_uint8_scaling():
    model = models.build_nature_cnn(6)
    conv = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64)
    dense = 7 * 7 * 64 * 512 + 512 + 512 * 6 + 6
    assert models.count_params(model) == conv + dense
    assert model.inputs[0].dtype == "uint8"
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 84, 84, 4), dtype=np.uint8)
    scaled = keras.Model(model.inputs, model.get_layer("scale").output)(frames)
    np.testing.assert_allclose(np.asarray(scaled), frames / 255.0, rtol=1e-6)
    assert model(frames).shape == (2, 6)


def test_small_nature_cnn_sizes_are_arguments():
    model = models.build_nature_cnn(4, filters=(8, 8, 8), dense_units=16)
    assert model.get_layer("conv_2").filters == 8 and model.get_layer("hidden").units == 16


@pytest.mark.parametrize("build", [
    lambda: models.build_mlp((5,), 3),
    lambda: models.build_nature_cnn(3, filters=(4, 4, 4), dense_units=8),
])
def test_models_save_and_load_as_keras_files_in_safe_mode(tmp_path, build):
    model = build()
    x = np.random.default_rng(1).integers(0, 255, size=(4, *model.inputs[0].shape[1:]))
    x = x.astype(model.inputs[0].dtype)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_actions": 0}, "num_actions"),
    ({"num_actions": 2, "hidden_units": (4, -1)}, "hidden_units"),
])
def test_mlp_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build_mlp((3,), **kwargs)


def test_nature_cnn_needs_three_filters():
    with pytest.raises(ValueError, match="filters"):
        models.build_nature_cnn(4, filters=(32, 64))


def test_mlp_dropout_is_active_only_in_training():
    model = models.build_mlp((5,), 3, hidden_units=(64,), dropout=0.5)
    x = np.ones((4, 5), "float32")
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))
    with pytest.raises(ValueError, match="dropout"):
        models.build_mlp((5,), 3, dropout=1.0)


def test_count_params_counts_anything_with_variables():
    import tensorflow as tf

    class Holder:  # e.g. tfkd.agents.QNetworkTeacher: variables, no weights
        def __init__(self):
            shared = tf.Variable(tf.zeros((3, 4)))
            self.variables = [shared, tf.Variable(tf.zeros((4,))), shared]

    assert models.count_params(Holder()) == 3 * 4 + 4  # a shared variable counts once
    module = tf.Module()
    module.kernel = tf.Variable(tf.zeros((2, 5)))
    assert models.count_params(module) == 10
    with pytest.raises(TypeError, match="neither weights nor variables"):
        models.count_params(lambda x: x)


def test_default_teacher_and_student_architectures():
    teacher = models.build_teacher((4,), 2, atari=False)
    assert [layer.units for layer in teacher.layers if hasattr(layer, "units")] == [256, 256, 2]
    student = models.build_student((4,), 2, atari=False)
    assert models.count_params(student) == 4 * 32 + 32 + 32 * 2 + 2 and student.name == "student"
    assert models.count_params(models.build_student((4,), 2, False, hidden_units=(8, 8))) == (
        4 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2)


def test_default_atari_architectures():
    teacher = models.build_teacher((84, 84, 4), 6, atari=True)
    assert models.count_params(teacher) == models.count_params(models.build_nature_cnn(6))
    student = models.build_student((84, 84, 4), 6, atari=True)
    assert [student.get_layer(f"conv_{i}").filters for i in range(3)] == [16, 32, 32]
    assert student.get_layer("hidden").units == 128 and student.inputs[0].dtype == "uint8"
    assert models.build_student((84, 84, 4), 6, True, hidden_units=(64,)).get_layer(
        "hidden").units == 64
    with pytest.raises(ValueError, match="one dense layer"):
        models.build_student((84, 84, 4), 6, True, hidden_units=(64, 64))
