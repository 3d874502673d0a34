"""tfkd.agents: the TF-Agents integration (TF_USE_LEGACY_KERAS=1 from conftest)."""

import dataclasses
import json
import os
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

tfa = pytest.importorskip("tf_agents")

from tf_agents.drivers import dynamic_episode_driver  # noqa: E402
from tf_agents.environments import tf_py_environment, utils  # noqa: E402
from tf_agents.metrics import tf_metrics  # noqa: E402
from tf_agents.policies import random_tf_policy  # noqa: E402
from tf_agents.replay_buffers import tf_uniform_replay_buffer  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

from tfkd import agents  # noqa: E402

TINY_DQN = agents.DQNConfig(
    env_id="CartPole-v1", hidden_units=(16,), total_env_steps=180, learning_starts=60,
    buffer_capacity=1000, train_every=4, gradient_steps=2, batch_size=16,
    epsilon_fraction=0.5, target_update_every=40, eval_every=60, eval_episodes=1,
    progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DQN teacher on CartPole, saved and checkpointed."""
    root = tmp_path_factory.mktemp("dqn")
    config = dataclasses.replace(TINY_DQN, checkpoint_dir=str(root / "ckpt"))
    result = agents.train_dqn_teacher(config, out_dir=str(root / "teacher"))
    return result, root


def test_adapter_passes_tf_agents_validation():
    env = agents.GymnasiumEnvironment("CartPole-v1", seed=0)
    utils.validate_py_environment(env, episodes=3)
    assert env.action_spec().maximum == 1
    assert env.observation_spec().shape == (4,)


def test_adapter_episode_ends_and_auto_resets():
    env = agents.GymnasiumEnvironment("CartPole-v1", seed=0)
    step = env.reset()
    assert step.is_first()
    length = 0
    while not step.is_last():
        step = env.step(np.int64(0))
        length += 1
    assert step.discount == 0.0  # The pole fell: termination, nothing to bootstrap.
    assert 5 < length < 500
    assert env.step(np.int64(0)).is_first()  # handle_auto_reset=True


def test_adapter_time_limit_is_truncation_with_discount_one():
    env = agents.GymnasiumEnvironment("CartPole-v1", seed=0, max_episode_steps=3)
    env.reset()
    steps = [env.step(np.int64(i % 2)) for i in range(3)]
    assert steps[-1].is_last() and steps[-1].discount == 1.0


def test_adapter_rejects_continuous_actions_and_images():
    with pytest.raises(ValueError, match="discrete action space"):
        agents.GymnasiumEnvironment("Pendulum-v1")
    image_env = gym.make("CartPole-v1")
    image_env.observation_space = gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)
    with pytest.raises(ValueError, match="image observations need a CNN"):
        agents.GymnasiumEnvironment(image_env)


def test_import_without_legacy_keras_says_what_to_set():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", "import tfkd.agents"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1" in run.stderr and "ImportError" in run.stderr


def test_train_save_load_and_resume(trained, tmp_path):
    from tfkd.models import count_params

    result, root = trained
    updates_per_step = TINY_DQN.gradient_steps / TINY_DQN.train_every
    trained_steps = TINY_DQN.total_env_steps - TINY_DQN.learning_starts
    assert int(result.agent.train_step_counter.numpy()) == trained_steps * updates_per_step
    assert result.history.eval_steps == [120, 180]
    assert result.best_return == max(result.history.eval_return_mean)
    loaded = agents.load_dqn_teacher(str(root / "teacher"))
    observations = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded(observations), result.teacher(observations), rtol=1e-6)
    assert count_params(loaded) == count_params(result.teacher) == 4 * 16 + 16 + 16 * 2 + 2
    # Resuming from the checkpoint continues the step count and the history.
    longer = dataclasses.replace(TINY_DQN, total_env_steps=240, checkpoint_dir=str(root / "ckpt"))
    resumed = agents.train_dqn_teacher(longer)
    assert resumed.history.eval_steps == [120, 180, 240]
    assert resumed.best_return >= result.best_return
    assert int(resumed.agent.train_step_counter.numpy()) == (240 - 60) * updates_per_step


def test_rerun_of_a_finished_run_keeps_the_best_teacher(tmp_path):
    config = dataclasses.replace(TINY_DQN, checkpoint_dir=str(tmp_path / "ckpt"))
    first = agents.train_dqn_teacher(config, out_dir=str(tmp_path / "a"))
    again = agents.train_dqn_teacher(config, out_dir=str(tmp_path / "b"))
    assert again.history.eval_steps == first.history.eval_steps
    assert again.best_return == first.best_return
    observations = np.random.default_rng(4).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.teacher(observations), first.teacher(observations))
    with open(tmp_path / "b" / "teacher.json", encoding="utf-8") as file:
        description = json.load(file, parse_constant=_reject_constant)
    assert description["best_return"] == first.best_return
    assert description["history"]["eval_steps"] == [120, 180]
    assert description["selection_seeds"] == first.history.selection_seeds


def _reject_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def test_nan_weights_are_an_error_not_a_save(trained, tmp_path):
    result, _ = trained
    broken = agents.TrainedDqnTeacher(agent=result.agent, teacher=result.teacher,
                                      env_id="CartPole-v1", history=result.history)
    saved = [v.numpy().copy() for v in result.teacher.variables]
    try:
        result.teacher.variables[0].assign(np.full(saved[0].shape, np.nan, np.float32))
        with pytest.raises(ValueError, match="NaN"):
            agents.save_dqn_teacher(broken, TINY_DQN, str(tmp_path / "teacher"))
    finally:
        for variable, value in zip(result.teacher.variables, saved):
            variable.assign(value)
    assert not (tmp_path / "teacher" / "teacher.json").exists()


def test_bad_teacher_and_checkpoint_directories(trained, tmp_path):
    _, root = trained
    with pytest.raises(FileNotFoundError, match="No teacher folder"):
        agents.load_dqn_teacher(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="teacher.json"):
        agents.load_dqn_teacher(str(tmp_path))
    description = {"backend": "tf-agents", "env_id": "CartPole-v1", "hidden_units": [16]}
    (tmp_path / "teacher.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match="Q-network weights"):
        agents.load_dqn_teacher(str(tmp_path))
    (tmp_path / "teacher.json").write_text(json.dumps({**description, "env_id": "NoSuchEnv-v9"}))
    with pytest.raises(ValueError, match="unknown environment id 'NoSuchEnv-v9'"):
        agents.load_dqn_teacher(str(tmp_path))
    (tmp_path / "teacher.json").write_text("{not json")
    with pytest.raises(ValueError, match="Corrupt"):
        agents.load_dqn_teacher(str(tmp_path))
    corrupt = tmp_path / "ckpt"
    corrupt.mkdir()
    (corrupt / "latest.json").write_text('{"checkpoint": "ckpt-5"}')
    (corrupt / "ckpt-5").mkdir()
    (corrupt / "ckpt-5" / "state.json").write_text('{"env_id": "CartPole-v1"}')
    (corrupt / "ckpt-5" / "agent.index").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Cannot resume"):
        agents.train_dqn_teacher(dataclasses.replace(TINY_DQN, checkpoint_dir=str(corrupt)))
    with pytest.raises(ValueError, match="Cannot resume"):
        agents.train_dqn_teacher(dataclasses.replace(
            TINY_DQN, env_id="Acrobot-v1", checkpoint_dir=str(root / "ckpt")))


def test_same_seed_gives_the_same_teacher_and_history():
    first, second = (agents.train_dqn_teacher(TINY_DQN) for _ in range(2))
    for a, b in zip(first.teacher.variables, second.teacher.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    first_history, second_history = first.history.as_dict(), second.history.as_dict()
    first_history.pop("wall_time_s"), second_history.pop("wall_time_s")
    assert first_history == second_history


def test_callbacks_and_tensorboard_see_every_evaluation(tmp_path):
    import keras

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.logs = []

        def on_epoch_end(self, epoch, logs=None):
            self.logs.append((epoch, logs))

    record = Record()
    config = dataclasses.replace(TINY_DQN, total_env_steps=120, callbacks=[record],
                                 tensorboard_dir=str(tmp_path / "tb"))
    agents.train_dqn_teacher(config)
    assert [index for index, _ in record.logs] == [0]
    assert set(record.logs[0][1]) >= {"return", "best_return", "env_steps", "loss", "epsilon"}
    assert record.logs[0][1]["env_steps"] == 120 and np.isfinite(record.logs[0][1]["loss"])
    assert any(name.startswith("events.") for name in os.listdir(tmp_path / "tb"))


def test_as_teacher_from_agent_network_policy_and_saved_policy(trained):
    result, root = trained
    observations = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    expected = result.teacher(observations).numpy()
    for source in (result.agent, result.agent._q_network, result.agent.policy,
                   result.agent.collect_policy):
        teacher = agents.as_teacher(source)
        np.testing.assert_allclose(teacher(observations), expected, rtol=1e-6)
        assert teacher.num_actions == 2
    saved_policy = tf.saved_model.load(str(root / "teacher" / "policy"))
    hard = agents.as_teacher(saved_policy, num_actions=2)(observations).numpy()
    np.testing.assert_array_equal(hard.argmax(-1), expected.argmax(-1))
    with pytest.raises(TypeError, match="DqnAgent"):
        agents.as_teacher(object())


def test_teacher_drives_keras3_distiller_and_stays_frozen(trained):
    from tfkd import Distiller
    from tfkd.models import build_mlp

    result, _ = trained
    teacher = result.teacher
    before = [v.numpy().copy() for v in teacher.variables]
    student = build_mlp((4,), 2, hidden_units=(8,))
    distiller = Distiller(student, teacher=teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    observations = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    student_before = [w.numpy().copy() for w in student.weights]
    distiller.fit(observations, epochs=2, batch_size=32, verbose=0)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(student_before, student.weights))
    for old, variable in zip(before, teacher.variables):
        np.testing.assert_array_equal(old, variable.numpy())


def test_student_policy_runs_in_tf_agents_drivers_and_metrics():
    from tfkd.models import build_mlp

    student = build_mlp((4,), 2, hidden_units=(8,))
    py_env = agents.GymnasiumEnvironment("CartPole-v1", seed=0)
    policy = agents.StudentPolicy(student, py_env.time_step_spec(), py_env.action_spec())
    stats = agents.evaluate_policy(policy, py_env, num_episodes=3)
    assert stats.num_episodes == 3 and stats.mean == pytest.approx(np.mean(stats.returns))
    assert stats.std >= 0
    tf_env = tf_py_environment.TFPyEnvironment(agents.GymnasiumEnvironment("CartPole-v1", seed=0))
    metric = tf_metrics.AverageReturnMetric()
    sampling = agents.StudentPolicy(student, tf_env.time_step_spec(), tf_env.action_spec(),
                                    temperature=1.0)
    dynamic_episode_driver.DynamicEpisodeDriver(tf_env, sampling, [metric], num_episodes=2).run()
    assert metric.result().numpy() > 0
    # Greedy actions are the argmax of the Keras 3 model.
    observations = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
    time_step = ts.restart(tf.constant(observations), batch_size=6)
    actions = policy.action(time_step).action.numpy()
    np.testing.assert_array_equal(actions, np.argmax(student(observations), axis=-1))
    with pytest.raises(ValueError, match="3 values"):
        agents.StudentPolicy(build_mlp((4,), 3), py_env.time_step_spec(), py_env.action_spec())


def test_replay_buffer_dataset_is_labelled_by_teacher(trained):
    result, _ = trained
    tf_env = tf_py_environment.TFPyEnvironment(agents.GymnasiumEnvironment("CartPole-v1", seed=0))
    random_policy = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(), tf_env.action_spec())
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        random_policy.trajectory_spec, batch_size=1, max_length=200)
    from tf_agents.drivers import dynamic_step_driver

    dynamic_step_driver.DynamicStepDriver(tf_env, random_policy, [buffer.add_batch],
                                          num_steps=50).run()
    dataset = agents.replay_buffer_dataset(buffer, result.teacher, batch_size=16, shuffle=False)
    observations, outputs = (np.concatenate(parts) for parts in zip(*dataset.as_numpy_iterator()))
    assert observations.shape == (50, 4) and outputs.shape == (50, 2)
    np.testing.assert_allclose(outputs, result.teacher(observations), rtol=1e-6)
    assert sum(1 for _ in agents.replay_buffer_dataset(buffer, result.teacher, batch_size=8,
                                                       max_transitions=20)) == 3
    empty = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        random_policy.trajectory_spec, batch_size=1, max_length=10)
    with pytest.raises(ValueError, match="empty"):
        agents.replay_buffer_dataset(empty, result.teacher)
