"""The compact Keras DQN used for teachers and the from-scratch baseline."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from tfkd.models import build_mlp
from tfkd.rl import DQNConfig, DQNHistory, RoundCSVLogger, train_dqn
from tfkd.rl import evaluation
from tfkd.rl.dqn import _make_update, load_dqn_teacher, save_dqn_teacher, td_targets
from tfkd.rl.envs import EnvSpec
from tfkd.rl.teacher_io import NonFiniteError

TINY = DQNConfig(env_id="CartPole-v1", hidden_units=(16,), total_env_steps=400,
                 learning_starts=100, buffer_capacity=1_000, batch_size=16, eval_every=200,
                 eval_episodes=2, target_update_every=100, epsilon_fraction=0.5, progress=False)


def _tiny_network(seed=0):
    keras.utils.set_random_seed(seed)
    return build_mlp((4,), 2, (16,))


def _strict_json(path):
    def reject(name):
        raise ValueError(f"not strict JSON: {name}")

    with open(path, encoding="utf-8") as file:
        return json.load(file, parse_constant=reject)


def evaluate_policy(env_id, network, seeds):
    return evaluation.evaluate_policy(env_id, network, list(seeds))


def test_epsilon_schedule_decays_linearly():
    config = DQNConfig(total_env_steps=1_000, epsilon_fraction=0.5, epsilon_initial=1.0,
                       epsilon_final=0.1)
    assert config.epsilon(0) == 1.0
    assert config.epsilon(250) == pytest.approx(0.55)
    assert config.epsilon(500) == pytest.approx(0.1) and config.epsilon(900) == pytest.approx(0.1)


def test_td_update_fits_terminal_rewards():
    """On terminal transitions the target is the reward: Q(s, a) must move to it."""
    keras.utils.set_random_seed(0)
    spec = EnvSpec("toy", (3,), np.dtype(np.float32), 2)
    q_network, target_network = build_mlp((3,), 2, (16,)), build_mlp((3,), 2, (16,))
    update = _make_update(q_network, target_network, keras.optimizers.Adam(1e-2), 0.99, spec)
    observations = np.eye(3, dtype=np.float32)
    actions, rewards = np.array([0, 1, 0], np.int32), np.array([1.0, -1.0, 0.5], np.float32)
    for _ in range(300):
        update(observations, actions, rewards, observations, np.ones(3, np.float32))
    q_values = np.asarray(q_network(observations))
    np.testing.assert_allclose(q_values[np.arange(3), actions], rewards, atol=0.05)


def test_td_targets_match_a_numpy_reference():
    """Double DQN: the online net picks a', the target net values it; DQN: the target's max."""
    rng = np.random.default_rng(0)
    rewards, terminated = rng.normal(size=5), np.array([0, 1, 0, 0, 1], np.float64)
    next_target_q, next_online_q = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    chosen = next_target_q[np.arange(5), next_online_q.argmax(-1)]
    np.testing.assert_allclose(td_targets(rewards, terminated, next_target_q, 0.9, next_online_q),
                               rewards + 0.9 * (1 - terminated) * chosen)
    np.testing.assert_allclose(td_targets(rewards, terminated, next_target_q, 0.9),
                               rewards + 0.9 * (1 - terminated) * next_target_q.max(-1))


def test_short_dqn_run_learns_something():
    keras.utils.set_random_seed(0)
    q_network = build_mlp((4,), 2, (64, 64))
    config = DQNConfig(total_env_steps=6_000, learning_starts=500, eval_every=0, eval_episodes=5,
                       target_update_every=200, epsilon_fraction=0.5, progress=False)
    history = train_dqn(q_network, config)
    assert history.env_steps == 6_000 and len(history.eval_return_mean) == 1
    assert len(history.episode_returns) > 50
    # A few thousand steps of DQN beat random play on the same held-out episodes,
    # confidence intervals apart.
    seeds = evaluation.held_out_seeds(0, 20)
    trained = evaluation.evaluate_policy("CartPole-v1", q_network, seeds)
    random_play = evaluation.evaluate_policy("CartPole-v1", evaluation.random_policy(2), seeds)
    assert trained.ci95[0] > random_play.ci95[1], (trained, random_play)


@pytest.mark.slow
def test_dqn_solves_cartpole():
    keras.utils.set_random_seed(0)
    q_network = build_mlp((4,), 2, (256, 256))
    config = DQNConfig(total_env_steps=50_000, learning_rate=2.3e-3, batch_size=64, num_envs=8,
                       train_every=256, gradient_steps=128, target_update_every=10,
                       epsilon_fraction=0.16, epsilon_final=0.04, buffer_capacity=100_000,
                       eval_every=5_000, progress=False)
    train_dqn(q_network, config)
    assert evaluate_policy("CartPole-v1", q_network, range(123, 143)).mean > 400


def test_target_return_stops_training_at_the_first_evaluation_that_reaches_it():
    keras.utils.set_random_seed(0)
    q_network = build_mlp((4,), 2, (16,))
    # Any greedy CartPole policy returns at least 8, so the first evaluation
    # (after 400 env steps) reaches a target of 1 and training stops there.
    config = DQNConfig(total_env_steps=4_000, learning_starts=100, eval_every=400,
                       eval_episodes=2, target_return=1.0, progress=False)
    history = train_dqn(q_network, config)
    assert history.env_steps == 400
    assert history.eval_steps == [400] and history.eval_return_mean[0] >= 1.0


def test_same_seed_gives_the_same_teacher_and_history():
    runs = []
    for _ in range(2):
        network = _tiny_network()
        runs.append((network, train_dqn(network, TINY)))
    (first, first_history), (second, second_history) = runs
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    first_dict, second_dict = first_history.as_dict(), second_history.as_dict()
    first_dict.pop("wall_time_s"), second_dict.pop("wall_time_s")
    assert first_dict == second_dict
    assert first_dict["selection_seeds"] == list(evaluation.selection_seeds(TINY.seed, 2))


def test_resume_and_rerun_never_lower_the_best_return(tmp_path):
    config = dataclasses.replace(TINY, checkpoint_dir=str(tmp_path / "ckpt"))
    network = _tiny_network()
    history = train_dqn(network, config, out_dir=str(tmp_path / "teacher"))
    best, weights = history.best_return, network.get_weights()
    assert history.eval_steps == [200, 400] and best == max(history.eval_return_mean)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["ckpt-400", "latest.json"]
    # A rerun of the finished run trains nothing and ends with the best weights.
    rerun = _tiny_network(seed=1)
    again = train_dqn(rerun, config, out_dir=str(tmp_path / "again"))
    assert again.eval_steps == [200, 400] and again.best_return == best
    for a, b in zip(weights, rerun.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Resuming with a larger budget continues the step count and the history.
    longer = dataclasses.replace(config, total_env_steps=600)
    resumed = train_dqn(_tiny_network(seed=2), longer)
    assert resumed.eval_steps == [200, 400, 600] and resumed.env_steps == 600
    assert resumed.best_return >= best
    description = _strict_json(tmp_path / "teacher" / "teacher.json")
    assert description["best_return"] == best and description["backend"] == "keras"
    assert description["history"]["eval_steps"] == [200, 400]
    # The folder travels: no path of the machine that trained it is in its recipe.
    assert "checkpoint_dir" not in description["config"]
    assert description["config"]["total_env_steps"] == TINY.total_env_steps
    loaded, _ = load_dqn_teacher(str(tmp_path / "teacher"))
    for a, b in zip(weights, loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_history_json_is_strict_when_nothing_was_learned():
    history = train_dqn(_tiny_network(), dataclasses.replace(
        TINY, total_env_steps=40, learning_starts=100, eval_every=0))
    values = history.as_dict()
    assert values["eval_loss"] == [None]  # No update ran: null, never NaN.
    json.dumps(values, allow_nan=False)


def test_nan_weights_and_nan_loss_are_errors_not_saves(tmp_path):
    network = _tiny_network()
    network.set_weights([np.full_like(w, np.nan) for w in network.get_weights()])
    with pytest.raises(NonFiniteError, match="NaN"):
        save_dqn_teacher(network, TINY, DQNHistory(), str(tmp_path / "t"))
    assert not (tmp_path / "t" / "teacher.json").exists()
    with pytest.raises(NonFiniteError, match="diverged"):
        train_dqn(network, dataclasses.replace(TINY, checkpoint_dir=str(tmp_path / "ckpt")),
                  out_dir=str(tmp_path / "t"))
    assert not (tmp_path / "t" / "teacher.json").exists()
    assert not (tmp_path / "ckpt" / "latest.json").exists()


def test_teacher_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="No teacher folder"):
        load_dqn_teacher(str(tmp_path / "missing"))
    (tmp_path / "teacher.json").write_text(json.dumps(
        {"backend": "keras", "env_id": "NoSuchEnv-v9", "hidden_units": [16]}))
    with pytest.raises(ValueError, match="unknown environment id 'NoSuchEnv-v9'"):
        load_dqn_teacher(str(tmp_path))
    (tmp_path / "teacher.json").write_text(json.dumps(
        {"backend": "keras", "env_id": "CartPole-v1", "hidden_units": [16]}))
    (tmp_path / "teacher.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="corrupt") as error:
        load_dqn_teacher(str(tmp_path))
    assert "\n" not in str(error.value)


def test_callbacks_and_tensorboard_see_every_evaluation(tmp_path):
    logs = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda i, l: logs.append((i, l)))
    train_dqn(_tiny_network(), dataclasses.replace(
        TINY, callbacks=[callback], tensorboard_dir=str(tmp_path / "tb")))
    assert [index for index, _ in logs] == [0, 1]
    assert [entry["env_steps"] for _, entry in logs] == [200, 400]
    assert set(logs[0][1]) >= {"return", "best_return", "env_steps", "loss", "epsilon"}
    assert np.isfinite(logs[1][1]["loss"]) and logs[1][1]["best_return"] >= logs[0][1]["return"]
    assert any(name.startswith("events.") for name in os.listdir(tmp_path / "tb"))


def test_no_evaluations_keeps_the_last_weights_and_still_checkpoints(tmp_path):
    config = dataclasses.replace(TINY, eval_episodes=0, checkpoint_dir=str(tmp_path / "ckpt"))
    history = train_dqn(_tiny_network(), config)
    assert history.eval_steps == [] and history.best_return is None
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["ckpt-400", "latest.json"]
    json.dumps(history.as_dict(), allow_nan=False)


def test_a_checkpoint_of_other_settings_is_refused_but_a_larger_budget_resumes(tmp_path):
    log = tmp_path / "evaluations.csv"
    config = dataclasses.replace(TINY, checkpoint_dir=str(tmp_path / "ckpt"), callbacks=[
        RoundCSVLogger(log, keys=("return", "env_steps"), index_name="evaluation")])
    train_dqn(_tiny_network(), config)
    other = dataclasses.replace(config, learning_rate=5e-4)
    with pytest.raises(ValueError, match=r"other settings \(learning_rate\)"):
        train_dqn(_tiny_network(), other)
    longer = train_dqn(_tiny_network(), dataclasses.replace(config, total_env_steps=600))
    assert longer.env_steps == 600 and longer.eval_steps == [200, 400, 600]
    with open(log, newline="") as file:  # the resumed run keeps the first run's rows
        rows = list(csv.DictReader(file))
    assert [(row["evaluation"], int(row["env_steps"])) for row in rows] == [
        ("0", 200), ("1", 400), ("2", 600)]
    assert [float(row["return"]) for row in rows] == pytest.approx(longer.eval_return_mean)
