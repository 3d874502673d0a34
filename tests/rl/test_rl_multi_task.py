"""Many teachers, one student: multi-task distillation (Rusu et al. 2016, §4),
one student with a head per task, and several teachers of one task.

Two tasks with fixed-weight teachers that need no training: CartPole-v1 (the
linear controller of conftest.py, 500 every episode) and MountainCar-v0 (push
the way the car moves: about -112 against random play's -200). A multi-task
student distilled from both must play both, on held-out episodes.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.distillation import Distiller, TeacherEnsemble
from tfkd.models import build_mlp, build_multi_task_student, count_params, task_model, task_names
from tfkd.rl import (
    DistillConfig,
    MultiTaskHistory,
    compare_policies,
    distill,
    distill_multi_task,
    held_out_seeds,
)
from tfkd.rl.loops import MASKED_LOGIT, _packed_view

TASKS = {"CartPole-v1": ((4,), 2), "MountainCar-v0": ((2,), 3)}
HELD_OUT = held_out_seeds(0, 10)


def mountain_car_teacher() -> keras.Model:
    """Logits ``[-100 v, 0.001, 100 v]``: push the way the car moves (v: velocity)."""
    inputs = keras.Input((2,))
    layer = keras.layers.Dense(3, name="logits")
    model = keras.Model(inputs, layer(inputs), name="mountain_car_teacher")
    layer.set_weights([np.array([[0, 0, 0], [-100, 0, 100]], np.float32),
                       np.array([0, 1e-3, 0], np.float32)])
    return model


def student(seed=0):
    keras.utils.set_random_seed(seed)
    return build_multi_task_student(TASKS, trunk_units=(32,), adapter_units=32)


def config(**overrides):
    values = dict(env_id=tuple(TASKS), total_env_steps=4_000, steps_per_round=1_000,
                  train_steps_per_round=300, eval_episodes=3, learning_rate=3e-3,
                  progress=False)
    return DistillConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def distilled(cartpole_teacher):
    model = student()
    history = distill_multi_task([cartpole_teacher, mountain_car_teacher()], model, config())
    return model, history


def test_one_student_plays_both_tasks_like_its_teachers(cartpole_teacher, distilled):
    model, history = distilled
    teachers = {"CartPole-v1": cartpole_teacher, "MountainCar-v0": mountain_car_teacher()}
    for env_id, teacher in teachers.items():
        untrained = compare_policies(env_id, teacher, task_model(student(), env_id), HELD_OUT)
        assert untrained.normalized_score < 0.5  # the test can fail
        result = compare_policies(env_id, teacher, task_model(model, env_id), HELD_OUT)
        assert result.normalized_score >= 0.9, (env_id, result.as_dict())
    assert isinstance(history, MultiTaskHistory)
    assert list(history.tasks) == list(TASKS) and history.num_rounds == 4
    for task_history in history.tasks.values():
        assert task_history.env_steps == [1000, 2000, 3000, 4000]  # the budget is per task
        assert task_history.loss == history.tasks["CartPole-v1"].loss  # one shared loss
    best = max(s for s in history.mean_normalized_score if s is not None)
    assert history.mean_normalized_score[history.kept_round] == best


def test_the_student_saves_as_one_keras_file_and_acts_per_task(distilled, tmp_path):
    model, _ = distilled
    model.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert task_names(loaded) == list(TASKS)
    rng = np.random.default_rng(0)
    for env_id, (shape, num_actions) in TASKS.items():
        x = rng.normal(size=(16, *shape)).astype(np.float32)
        expected = task_model(model, env_id)(x).numpy()
        np.testing.assert_allclose(task_model(loaded, env_id)(x).numpy(), expected, rtol=1e-6)
        assert expected.shape == (16, num_actions)


def test_side_by_side_loss_is_the_mean_kl_over_all_tasks_rows():
    """One step's loss against a float64 NumPy reference: padded actions add nothing."""
    model = student(1)
    rng = np.random.default_rng(1)
    x = {"CartPole-v1": rng.normal(size=(5, 4)), "MountainCar-v0": rng.normal(size=(3, 2))}
    t = [rng.normal(size=(5, 2)), rng.normal(size=(3, 3))]
    s = [task_model(model, env_id)(x[env_id]).numpy().astype(np.float64) for env_id in TASKS]

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    temperature = 2.0
    rows = [np.sum(np.exp(log_softmax(ti / temperature))
                   * (log_softmax(ti / temperature) - log_softmax(si / temperature)), -1)
            for ti, si in zip(t, s)]
    expected = temperature**2 * np.concatenate(rows).mean()

    distiller = Distiller(_packed_view(model, [2, 3]), teacher=None, temperature=temperature)
    distiller.compile()
    padded = np.concatenate([np.pad(t[0], [[0, 0], [0, 1]], constant_values=MASKED_LOGIT), t[1]])
    batch = tf.data.Dataset.from_tensors(  # one batch of 5 + 3 rows, as training stacks them
        ({k: v.astype(np.float32) for k, v in x.items()}, padded.astype(np.float32)))
    result = distiller.evaluate(batch, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["distillation_loss"], expected, rtol=1e-5)


def test_the_multi_task_student_is_small():
    model = build_multi_task_student(
        {"CartPole-v1": ((4,), 2), "Acrobot-v1": ((6,), 3), "LunarLander-v3": ((8,), 4)})
    assert count_params(model) == (4 + 6 + 8 + 3) * 64 + 2 * (64 * 64 + 64) + (65 * 9)


def test_mismatches_are_clear_errors(cartpole_teacher):
    with pytest.raises(ValueError, match="target_return applies to one task"):
        config(target_return=100.0)
    with pytest.raises(ValueError, match="names a task twice"):
        config(env_id=("CartPole-v1", "CartPole-v1"))
    with pytest.raises(ValueError, match="one positive number per task"):
        config(task_proportions=(1.0,))
    with pytest.raises(ValueError, match="1 teachers for 2 tasks"):
        distill_multi_task([cartpole_teacher], student(), config())
    with pytest.raises(ValueError, match="the student's tasks"):
        distill_multi_task([mountain_car_teacher(), cartpole_teacher], student(),
                           config(env_id=("MountainCar-v0", "CartPole-v1")))
    with pytest.raises(ValueError, match="distill_multi_task"):
        distill(cartpole_teacher, student(), config())
    with pytest.raises(ValueError, match="all be vectors or all be frames"):
        build_multi_task_student({"a": ((4,), 2), "b": ((10, 10, 4), 3)})
    with pytest.raises(ValueError, match="share height and width"):
        build_multi_task_student({"a": ((10, 10, 4), 2), "b": ((8, 8, 4), 3)})


def test_task_proportions_split_the_minibatch():
    assert config(batch_size=64).task_batch_sizes() == [64, 64]
    assert config(batch_size=64, task_proportions=(3, 1)).task_batch_sizes() == [96, 32]


def test_a_multi_task_run_resumes_from_its_checkpoint(cartpole_teacher, tmp_path):
    teachers = [cartpole_teacher, mountain_car_teacher()]
    tiny = config(total_env_steps=400, steps_per_round=200, train_steps_per_round=10,
                  eval_episodes=1, checkpoint_dir=str(tmp_path / "run"))
    first = distill_multi_task(teachers, student(), tiny)
    again = distill_multi_task(teachers, student(3), tiny)  # everything comes from the checkpoint
    assert again.resumed_from == first.num_rounds == 2
    assert again.as_dict()["tasks"]["CartPole-v1"]["env_steps"] == [200, 400]


@pytest.mark.parametrize("combination", ["mean", "most_confident"])
def test_a_student_of_two_teachers_follows_the_sure_one(make_cartpole_teacher, combination):
    """Several teachers of one task: a sure controller and an unsure wrong one."""
    sure = make_cartpole_teacher(100.0)
    inputs = keras.Input((4,))
    unsure = keras.Model(inputs, keras.layers.Dense(2, use_bias=False)(inputs))
    unsure.set_weights([-0.01 * sure.get_weights()[0]])  # pushes the wrong way, barely
    ensemble = TeacherEnsemble([sure, unsure], combination, temperature=1.0)
    keras.utils.set_random_seed(0)
    model = build_mlp((4,), 2, (16, 16))
    distill(ensemble, model, DistillConfig(total_env_steps=3_000, steps_per_round=1_000,
                                           train_steps_per_round=300, eval_episodes=3,
                                           learning_rate=3e-3, temperature=1.0, progress=False))
    result = compare_policies("CartPole-v1", sure, model, HELD_OUT)
    assert compare_policies("CartPole-v1", sure, unsure, HELD_OUT).normalized_score < 0.2
    assert result.normalized_score >= 0.9, result.as_dict()


@pytest.mark.slow
def test_multi_task_distillation_on_ray_workers(cartpole_teacher):
    """Each task collects on its own two actors, the tasks side by side."""
    pytest.importorskip("ray")
    model = student()
    history = distill_multi_task([cartpole_teacher, mountain_car_teacher()], model,
                                 config(workers=2, num_envs=4))
    for env_id, teacher in {"CartPole-v1": cartpole_teacher,
                            "MountainCar-v0": mountain_car_teacher()}.items():
        assert history.tasks[env_id].env_steps == [1000, 2000, 3000, 4000]
        result = compare_policies(env_id, teacher, task_model(model, env_id), HELD_OUT)
        assert result.normalized_score >= 0.9, (env_id, result.as_dict())
