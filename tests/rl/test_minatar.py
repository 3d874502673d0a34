"""MinAtar (Young & Tian 2019): 10x10xC boolean frames, the MinAtar network,
a multi-task student over games with different channel counts."""

import keras
import numpy as np
import pytest

from tfkd.models import (build_minatar_cnn, build_multi_task_student, build_student,
                         build_teacher, count_params, task_model)
from tfkd.rl import DistillConfig, distill_multi_task, env_spec, is_minatar, make_env
from tfkd.rl.envs import MINATAR_MAX_EPISODE_STEPS

GAMES = {"MinAtar/Breakout-v1": ((10, 10, 4), 3), "MinAtar/SpaceInvaders-v1": ((10, 10, 6), 4)}


@pytest.mark.parametrize("env_id", list(GAMES))
def test_minatar_envs_are_made_with_a_time_limit(env_id):
    env = make_env(env_id)
    spec = env_spec(env, env_id)
    assert is_minatar(env_id) and (spec.observation_shape, spec.num_actions) == GAMES[env_id]
    assert spec.observation_dtype == np.bool_
    assert env.spec.max_episode_steps == MINATAR_MAX_EPISODE_STEPS
    env.close()


def test_the_minatar_network_takes_boolean_frames():
    model = build_minatar_cnn((10, 10, 4), 3)
    # Young & Tian's network: conv 16 3x3 (valid), dense 128, linear output
    assert count_params(model) == (3 * 3 * 4 * 16 + 16) + (8 * 8 * 16 * 128 + 128) + (128 * 3 + 3)
    frames = np.random.default_rng(0).random((2, 10, 10, 4)) < 0.1
    assert model(frames).shape == (2, 3)
    teacher = build_teacher((10, 10, 4), 3, atari=False)
    student = build_student((10, 10, 4), 3, atari=False)
    assert count_params(teacher) == count_params(model)
    assert 7 * count_params(student) < count_params(teacher)


def test_one_student_of_minatar_games_with_different_channels(tmp_path):
    """The side-by-side training step with 1x1-convolution adapters, on real frames."""
    keras.utils.set_random_seed(0)
    teachers = [build_teacher(shape, actions, atari=False, name=f"teacher_{k}")
                for k, (shape, actions) in enumerate(GAMES.values())]
    student = build_multi_task_student(GAMES, trunk_units=(16,), adapter_channels=4,
                                       conv_filters=4)
    history = distill_multi_task(teachers, student, DistillConfig(
        env_id=tuple(GAMES), total_env_steps=200, steps_per_round=100,
        train_steps_per_round=5, num_envs=4, eval_episodes=1, progress=False))
    assert history.num_rounds == 2 and all(
        h.agreement[-1] is not None for h in history.tasks.values())
    student.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    frames = np.zeros((1, 10, 10, 6), bool)
    np.testing.assert_allclose(task_model(loaded, "MinAtar/SpaceInvaders-v1")(frames),
                               task_model(student, "MinAtar/SpaceInvaders-v1")(frames), rtol=1e-6)
