"""Kickstarting: λ schedules against their formulas, the loss against NumPy, a student past its teacher."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.models import build_mlp
from tfkd.rl import evaluation
from tfkd.rl.dqn import DQNConfig, DQNHistory, _make_update, train_dqn
from tfkd.rl.envs import EnvSpec
from tfkd.rl.kickstart import (
    DistillationTerm,
    KickstartConfig,
    advantage_loss,
    distillation_loss,
    exponential_decay,
    kickstart,
    linear_decay,
    performance_gate,
)

TINY = DQNConfig(env_id="CartPole-v1", hidden_units=(32,), total_env_steps=6_000, num_envs=4,
                 learning_starts=200, buffer_capacity=6_000, batch_size=64, train_every=16,
                 gradient_steps=16, target_update_every=200, eval_every=500, eval_episodes=5,
                 epsilon_fraction=0.2, progress=False)


# ------------------------------------------------------------------ schedules


def test_schedules_follow_their_formulas():
    assert linear_decay(0, 1_000) == 1.0
    assert linear_decay(250, 1_000) == pytest.approx(0.75)
    assert linear_decay(1_000, 1_000) == 0.0 and linear_decay(5_000, 1_000) == 0.0
    assert exponential_decay(0, 100) == 1.0
    assert exponential_decay(100, 100) == pytest.approx(0.5)
    assert exponential_decay(350, 100) == pytest.approx(2.0 ** -3.5)
    assert performance_gate(None) == 1.0
    assert performance_gate(0.25) == pytest.approx(0.75)
    assert performance_gate(1.3) == 0.0 and performance_gate(-0.5) == 1.0


@pytest.mark.parametrize("schedule, step, expected", [
    ("constant", 9_000, 3.0),
    ("linear", 2_000, 3.0 * (1 - 2_000 / 5_000)),      # default decay: half the run
    ("exponential", 2_000, 3.0 * 2.0 ** (-2_000 / 1_000)),  # default half-life: a tenth
])
def test_term_weight_is_coefficient_times_schedule(schedule, step, expected):
    term = DistillationTerm(None, KickstartConfig(schedule=schedule, coefficient=3.0),
                            total_env_steps=10_000)
    assert term.weight(step) == pytest.approx(expected)


def test_gate_uses_the_normalised_score_of_the_latest_evaluation():
    # teacher 100, random 20 on the selection episodes: a student at 60 scores 0.5
    term = DistillationTerm(None, KickstartConfig(schedule="gated", coefficient=2.0), 1_000,
                            teacher_return=100.0, random_return=20.0)
    assert term.weight(0) == 2.0  # not measured yet: full weight
    history = DQNHistory(eval_return_mean=[30.0, 60.0])
    term.observe(history)
    assert term.last_score == pytest.approx(0.5) and term.weight(500) == pytest.approx(1.0)
    # negative returns (LunarLander): the score, not a ratio of returns
    term = DistillationTerm(None, KickstartConfig(schedule="gated", coefficient=3.0), 1_000,
                            teacher_return=-50.0, random_return=-200.0)
    term.observe(DQNHistory(eval_return_mean=[-80.0]))
    assert term.weight(0) == pytest.approx(3.0 * (1 - 120.0 / 150.0))


@pytest.mark.parametrize("change, message", [
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"loss": "mse"}, "loss must be one of"),
    ({"coefficient": 0.0}, "coefficient"),
    ({"temperature": float("nan")}, "temperature"),
    ({"decay_steps": 0}, "decay_steps"),
    ({"offline_env_steps": 6_000}, "below the run's total_env_steps"),
    ({"offline_updates": 10}, "needs offline_env_steps"),
])
def test_bad_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        KickstartConfig(**change).check(TINY)


def test_gated_needs_evaluations():
    with pytest.raises(ValueError, match="eval_episodes"):
        KickstartConfig(schedule="gated").check(dataclasses.replace(TINY, eval_episodes=0))


# ------------------------------------------------------------------ the loss


def _kl_reference(teacher, student, temperature):
    def log_softmax(x):
        x = x / temperature
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    t, s = log_softmax(teacher.astype(np.float64)), log_softmax(student.astype(np.float64))
    return float(np.mean(np.sum(np.exp(t) * (t - s), axis=-1)))


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_distillation_loss_is_the_batch_mean_kl(temperature):
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(64, 4)).astype(np.float32)
    student = rng.normal(size=(64, 4)).astype(np.float32)
    value = float(distillation_loss(teacher, student, temperature))
    assert value == pytest.approx(_kl_reference(teacher, student, temperature), rel=1e-5)
    # a mean, not a sum: the same rows twice give the same value (CleanRL's sum doubles)
    doubled = float(distillation_loss(np.tile(teacher, (2, 1)), np.tile(student, (2, 1)),
                                      temperature))
    assert doubled == pytest.approx(value, rel=1e-6)


def test_advantage_loss_matches_the_teachers_advantages_not_its_values():
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(64, 4)) * 10
    student = rng.normal(size=(64, 4)) * 10
    centered = ((student - student.mean(-1, keepdims=True))
                - (teacher - teacher.mean(-1, keepdims=True)))
    value = float(advantage_loss(teacher.astype(np.float32), student.astype(np.float32)))
    assert value == pytest.approx(float(np.mean(centered ** 2)), rel=1e-5)
    # a state value added to every action of the student costs nothing
    shifted = teacher + rng.normal(size=(64, 1)) * 100
    assert float(advantage_loss(teacher, shifted)) == pytest.approx(0.0, abs=1e-9)
    term = DistillationTerm(None, KickstartConfig(loss="centered_mse"), 1_000)
    assert float(term.loss(teacher, student)) == pytest.approx(value, rel=1e-6)


def test_update_adds_weight_times_distillation_to_the_td_loss():
    """One update function: with weight 0 it is DQN's step; with a weight it pulls to the teacher."""
    spec = EnvSpec("toy", (3,), np.dtype(np.float32), 2)
    observations = np.eye(3, dtype=np.float32)
    actions, rewards = np.array([0, 1, 0], np.int32), np.zeros(3, np.float32)
    done = np.ones(3, np.float32)
    teacher = build_mlp((3,), 2, (8,))
    term = DistillationTerm(teacher, KickstartConfig(loss="kl", temperature=1.0), 1_000)

    def trained(distillation, weight, steps=1):
        keras.utils.set_random_seed(0)
        q_network, target = build_mlp((3,), 2, (16,)), build_mlp((3,), 2, (16,))
        update = _make_update(q_network, target, keras.optimizers.Adam(1e-2), 0.99, spec,
                              distillation=distillation)
        for _ in range(steps):
            td, kl = update(observations, actions, rewards, observations, done,
                            tf.constant(weight))
        return q_network, float(td), float(kl)

    plain, td_plain, kl_plain = trained(None, 0.0)
    zero, td_zero, kl_zero = trained(term, 0.0)
    assert kl_plain == 0.0 and td_zero == pytest.approx(td_plain)
    expected_kl = _kl_reference(np.asarray(teacher(observations)),
                                np.asarray(build_and_seed()(observations)), 1.0)
    assert kl_zero == pytest.approx(expected_kl, rel=1e-5)
    for a, b in zip(plain.get_weights(), zero.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    pulled, _, _ = trained(term, 50.0, steps=100)
    kl_after = _kl_reference(np.asarray(teacher(observations)), np.asarray(pulled(observations)),
                             1.0)
    assert kl_after < 0.05 * expected_kl


def build_and_seed():
    keras.utils.set_random_seed(0)
    return build_mlp((3,), 2, (16,))


# ------------------------------------------------------------------ end to end


def test_kickstarted_student_passes_a_crippled_teacher(crippled_cartpole_teacher, tmp_path):
    """CartPole, 6,000 env steps: the gated student beats its teacher on held-out episodes.

    (Measured: teacher 161.8, kickstarted student 253.1, the same DQN from scratch 102.2.)
    """
    teacher = crippled_cartpole_teacher
    keras.utils.set_random_seed(0)
    student = build_mlp((4,), 2, (32,))
    config = dataclasses.replace(TINY, tensorboard_dir=str(tmp_path / "tb"),
                                 checkpoint_dir=str(tmp_path / "ckpt"))
    qdagger_gated = KickstartConfig(schedule="gated", loss="kl", coefficient=3.0)
    history = kickstart(teacher, student, config, qdagger_gated)
    seeds = evaluation.held_out_seeds(0, 20)
    teacher_return = evaluation.evaluate_policy("CartPole-v1", teacher, seeds)
    student_return = evaluation.evaluate_policy("CartPole-v1", student, seeds)
    assert teacher_return.mean < 300  # the teacher really is crippled
    assert student_return.mean > teacher_return.mean + 50, (student_return, teacher_return)
    # λ and the losses are logged per evaluation; the gate closes as the student improves
    assert len(history.eval_lambda) == len(history.eval_steps) == 12
    assert history.eval_lambda[0] == 3.0 and min(history.eval_lambda) < 1.0
    assert all(loss is not None and loss >= 0 for loss in history.eval_distillation_loss[1:])
    assert os.listdir(tmp_path / "tb")
    # a finished run's checkpoint records the term; another term cannot resume it
    with pytest.raises(ValueError, match="another distillation term"):
        kickstart(teacher, build_mlp((4,), 2, (32,)), config, KickstartConfig(schedule="linear"))


def test_offline_phase_counts_its_env_steps(crippled_cartpole_teacher):
    teacher = crippled_cartpole_teacher
    keras.utils.set_random_seed(0)
    student = build_mlp((4,), 2, (16,))
    config = dataclasses.replace(TINY, total_env_steps=800, eval_every=400, eval_episodes=2)
    history = kickstart(teacher, student, config,
                        KickstartConfig(schedule="constant", offline_env_steps=400,
                                        offline_updates=20))
    # 400 teacher steps, then online from step 400 (the first evaluation once past it)
    assert history.env_steps == 800 and history.eval_steps == [404, 800]
    assert history.episode_end_steps and min(history.episode_end_steps) > 400


def test_plain_dqn_history_has_no_distillation_entries():
    keras.utils.set_random_seed(0)
    history = train_dqn(build_mlp((4,), 2, (8,)),
                        dataclasses.replace(TINY, total_env_steps=400, eval_every=400,
                                            eval_episodes=1))
    assert history.eval_lambda == [] and history.eval_distillation_loss == []
    json.dumps(history.as_dict(), allow_nan=False)
