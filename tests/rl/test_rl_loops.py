"""Distillation loops on CartPole-v1 with a fixed-weight teacher.

The teacher is a linear controller that balances the pole for the full 500
steps; a randomly initialised student falls within ~50. After a small budget
of distillation the student must balance too, on seeds it was never
evaluated on during training.
"""

import csv
import dataclasses
import glob
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from tfkd.models import build_mlp
from tfkd.rl import (
    CheckpointMismatchError,
    DistillConfig,
    RoundCSVLogger,
    distill,
    distill_student_driven,
    distill_teacher_driven,
    evaluate_policy,
    held_out_seeds,
    plot_history,
    selection_seeds,
)

loops_module = importlib.import_module("tfkd.rl.loops")
HELD_OUT_SEEDS = held_out_seeds(0, 10)
BUDGET = dict(
    env_id="CartPole-v1",
    total_env_steps=3_000,
    steps_per_round=1_000,
    train_steps_per_round=300,
    eval_episodes=3,
    progress=False,
)
TINY = dict(
    total_env_steps=400, steps_per_round=200, train_steps_per_round=20, eval_episodes=2,
    epsilon=0.1, beta_decay=0.5, progress=False,
)


def fresh_student(seed=0):
    keras.utils.set_random_seed(seed)
    return build_mlp((4,), 2, (16, 16), name="student")


def comparable(history):
    """The history without its wall times (the one entry that is not deterministic)."""
    values = history.as_dict()
    values.pop("wall_time_s")
    return values


@pytest.mark.parametrize(
    "distill_fn, config",
    [
        (distill_student_driven, DistillConfig(**BUDGET, beta_decay=0.5, keep_best=False)),
        (distill_teacher_driven, DistillConfig(**BUDGET, epsilon=0.1)),
    ],
    ids=["student-driven", "teacher-driven"],
)
def test_distilled_student_balances_the_pole(cartpole_teacher, distill_fn, config, tmp_path):
    student = fresh_student()
    before = evaluate_policy("CartPole-v1", student, HELD_OUT_SEEDS)
    assert before.mean < 100  # the test can fail: an untrained student does not balance

    history = distill_fn(cartpole_teacher, student, config)

    after = evaluate_policy("CartPole-v1", student, HELD_OUT_SEEDS)
    teacher = evaluate_policy("CartPole-v1", cartpole_teacher, HELD_OUT_SEEDS)
    assert teacher.mean == 500.0
    assert after.mean >= 450, (after.returns, history.as_dict())
    assert history.num_rounds == 3 and history.env_steps == [1000, 2000, 3000]
    assert history.agreement[-1] > 0.9
    assert history.loss[-1] < history.loss[0]
    assert None not in history.student_return_mean
    assert history.teacher_return == 500.0 and history.random_return < 50
    assert history.normalized_score[-1] == pytest.approx(
        (history.student_return_mean[-1] - history.random_return) / (500.0 - history.random_return)
    )
    if config.keep_best:  # the student ends with its best evaluated round's weights
        assert history.student_return_mean[history.kept_round] == max(history.student_return_mean)
    else:
        assert history.kept_round == 2
    json.dumps(history.as_dict(), allow_nan=False)  # strict JSON
    plot_history({config.control: history}, tmp_path / "history.png", title="CartPole")
    assert (tmp_path / "history.png").stat().st_size > 10_000


def test_student_driven_schedule_and_aggregation(cartpole_teacher):
    config = DistillConfig(
        total_env_steps=600, steps_per_round=200, train_steps_per_round=5, buffer_capacity=300,
        beta_initial=1.0, beta_decay=0.5, beta_min=0.2, eval_episodes=0, progress=False,
    )
    history = distill(cartpole_teacher, fresh_student(1), config)
    assert history.beta == [1.0, 0.5, 0.25]
    assert history.buffer_size == [200, 300, 300]  # aggregated under the memory bound
    assert history.student_return_mean == [None] * 3 and history.teacher_return is None
    assert config.beta(5) == 0.2
    assert dataclasses.replace(config, control="teacher").beta(5) == 1.0


def test_the_env_step_budget_is_never_exceeded(cartpole_teacher):
    config = DistillConfig(
        total_env_steps=500, steps_per_round=200, train_steps_per_round=2, eval_episodes=0,
        num_envs=8, progress=False,
    )
    assert config.round_steps() == [200, 200, 96]  # steps come num_envs at a time
    history = distill(cartpole_teacher, fresh_student(), config)
    assert history.env_steps == [200, 400, 496]


@pytest.mark.parametrize("train_steps, expected", [(1, 1), (7, 7), (60, 30), (2_000, 50), (53, 1)])
def test_steps_per_execution_divides_the_round(train_steps, expected):
    assert loops_module.steps_per_execution(train_steps) == expected


def test_each_round_makes_exactly_its_minibatch_updates(cartpole_teacher, monkeypatch):
    # 60 updates a round run 30 per compiled call; Keras would round 64 up.
    seen = []
    original = loops_module._Run._round

    def counting_round(run, round_index):
        result = original(run, round_index)
        seen.append(int(run.distiller.optimizer.iterations))
        return result

    monkeypatch.setattr(loops_module._Run, "_round", counting_round)
    config = DistillConfig(total_env_steps=200, steps_per_round=100, train_steps_per_round=60,
                           eval_episodes=0, progress=False)
    distill(cartpole_teacher, fresh_student(), config)
    assert seen == [60 * (k + 1) for k in range(len(config.round_steps()))]


def test_configs_are_checked(cartpole_teacher):
    with pytest.raises(ValueError, match="steps_per_round"):
        DistillConfig(total_env_steps=10, steps_per_round=100)
    with pytest.raises(ValueError, match="control"):
        DistillConfig(control="random")
    with pytest.raises(ValueError, match="seed"):
        DistillConfig(seed=-1)
    with pytest.raises(ValueError, match="eval_episodes"):
        DistillConfig(eval_episodes=-3)
    with pytest.raises(ValueError, match="target_return"):
        DistillConfig(target_return=math.nan)
    with pytest.raises(ValueError, match="discrete action space"):
        config = DistillConfig(env_id="Pendulum-v1", progress=False)
        distill(cartpole_teacher, fresh_student(), config)
    assert DistillConfig().keep_best  # the best round is kept unless asked otherwise
    with pytest.raises(ValueError, match="keep_best_from_round must name one of the run's 2"):
        DistillConfig(**TINY, keep_best_from_round=2)


def test_keep_best_chooses_among_the_rounds_from_keep_best_from_round(cartpole_teacher):
    config = DistillConfig(**{**TINY, "total_env_steps": 800}, keep_best_from_round=2)
    student = fresh_student()
    history = distill(cartpole_teacher, student, config)
    returns = history.student_return_mean
    assert history.num_rounds == 4 and history.kept_round >= 2
    assert returns[history.kept_round] == max(returns[2:])
    # the kept round's weights: the student plays its selection return again
    replay = evaluate_policy("CartPole-v1", student, selection_seeds(0, 2))
    assert replay.mean == returns[history.kept_round]


def test_same_seed_same_history_and_weights(cartpole_teacher):
    config = DistillConfig(**TINY, seed=3)
    first_student, second_student = fresh_student(), fresh_student()
    first = distill(cartpole_teacher, first_student, config)
    second = distill(cartpole_teacher, second_student, config)
    assert comparable(first) == comparable(second)
    for a, b in zip(first_student.get_weights(), second_student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = distill(cartpole_teacher, fresh_student(), dataclasses.replace(config, seed=4))
    assert comparable(other) != comparable(first)  # the seed does matter


class Recorder(keras.callbacks.Callback):
    def __init__(self, stop_after=None):
        super().__init__()
        self.events, self.weights, self.stop_after = [], [], stop_after

    def on_train_begin(self, logs=None):
        self.events.append("begin")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append((epoch, dict(logs)))
        self.weights.append(self.model.get_weights())
        if epoch == self.stop_after:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.events.append("end")


def test_callbacks_csv_and_tensorboard_see_every_round(cartpole_teacher, tmp_path):
    recorder = Recorder()
    config = DistillConfig(
        **TINY, callbacks=[recorder], csv_path=str(tmp_path / "log" / "rounds.csv"),
        tensorboard_dir=str(tmp_path / "tb"),
    )
    history = distill(cartpole_teacher, fresh_student(), config)
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end"
    logs = [event[1] for event in recorder.events[1:-1]]
    assert [event[0] for event in recorder.events[1:-1]] == [0, 1]
    assert set(logs[0]) == {
        "return", "normalized_score", "agreement", "loss", "beta", "buffer_size", "env_steps"
    }
    assert [log["env_steps"] for log in logs] == history.env_steps
    assert [log["return"] for log in logs] == history.student_return_mean
    with open(tmp_path / "log" / "rounds.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["round"]) for row in rows] == [0, 1]
    assert [float(row["loss"]) for row in rows] == pytest.approx(history.loss)
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))


def test_the_csv_log_of_a_resumed_run_keeps_the_earlier_rounds(tmp_path):
    path = tmp_path / "rounds.csv"

    def run(first_round, num_rounds, keys=("loss",)):
        logger = RoundCSVLogger(path, keys=keys)
        logger.on_train_begin()
        for index in range(first_round, first_round + num_rounds):
            logger.on_epoch_end(index, {"loss": 10 * first_round + index})
        logger.on_train_end()
        with open(path, newline="") as file:
            return [(row["round"], float(row["loss"])) for row in csv.DictReader(file)]

    assert run(0, 3) == [("0", 0), ("1", 1), ("2", 2)]
    assert run(2, 2) == [("0", 0), ("1", 1), ("2", 22), ("3", 23)]  # resumed at round 2
    assert run(0, 1) == [("0", 0)]  # a fresh run starts the file anew
    assert run(1, 1, keys=("loss", "beta")) == [("1", 11)]  # other columns: not its rows


def test_a_callback_can_stop_the_run(cartpole_teacher):
    config = DistillConfig(**TINY, callbacks=[Recorder(stop_after=0)])
    assert distill(cartpole_teacher, fresh_student(), config).num_rounds == 1


def test_keyboard_interrupt_keeps_the_last_finished_round(cartpole_teacher, monkeypatch):
    recorder = Recorder()
    calls = []
    real_evaluate = loops_module.evaluate_policy

    def evaluate_then_interrupt(*args, **kwargs):
        calls.append(args)
        if len(calls) == 4:  # teacher, random, round 0, then round 1's evaluation
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loops_module, "evaluate_policy", evaluate_then_interrupt)
    student = fresh_student()
    config = DistillConfig(**TINY, keep_best=False, callbacks=[recorder])
    history = distill(cartpole_teacher, student, config)
    assert history.interrupted and history.num_rounds == 1 and history.kept_round == 0
    assert recorder.events[-1] == "end"
    for kept, round_0 in zip(student.get_weights(), recorder.weights[0], strict=True):
        np.testing.assert_array_equal(kept, round_0)  # round 1's training is undone


class InterruptAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_an_interrupted_run_checkpoints_its_finished_round_and_resumes(cartpole_teacher, tmp_path):
    rounds_csv = tmp_path / "rounds.csv"
    config = DistillConfig(**TINY, checkpoint_dir=str(tmp_path / "run"), csv_path=str(rounds_csv))
    interrupted = distill(
        cartpole_teacher, fresh_student(), dataclasses.replace(config, callbacks=[InterruptAfter()])
    )
    assert interrupted.interrupted and interrupted.num_rounds == 1
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["round"] == 0
    resumed = distill(cartpole_teacher, fresh_student(), config)
    assert resumed.resumed_from == 1 and resumed.num_rounds == 2 and not resumed.interrupted
    assert resumed.loss[0] == interrupted.loss[0]
    with open(rounds_csv) as file:  # the restored round, then the new one
        assert [float(row["loss"]) for row in csv.DictReader(file)] == pytest.approx(resumed.loss)


RESUME_CONFIG = dict(
    total_env_steps=1_000, steps_per_round=200, train_steps_per_round=20, eval_episodes=2,
    epsilon=0.1, beta_decay=0.5, progress=False, seed=7,
)
RUN_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import keras
    sys.path.insert(0, {tests!r})
    from conftest import linear_cartpole_teacher
    from tfkd.models import build_mlp
    from tfkd.rl import DistillConfig, distill

    class Slow(keras.callbacks.Callback):  # leaves time to kill between checkpoints
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(1.0)

    keras.utils.set_random_seed(0)
    student = build_mlp((4,), 2, (16, 16), name="student")
    config = DistillConfig(**{config!r}, checkpoint_dir=sys.argv[1], callbacks=[Slow()])
    distill(linear_cartpole_teacher(), student, config)
    """
)


def test_a_killed_run_resumes_after_its_last_checkpoint(cartpole_teacher, tmp_path):
    """SIGKILL mid-run, then rerun: it resumes after the last finished round.

    Rounds up to the checkpoint equal an uninterrupted run's. Later rounds
    cannot: gymnasium does not save an environment's mid-episode state, so the
    resumed run starts fresh (seeded) episodes; it is checked to be
    deterministic itself and to follow the same schedule and budget.
    """
    checkpoint_dir = tmp_path / "checkpoint"
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT.format(tests=os.path.dirname(__file__), config=RESUME_CONFIG))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(checkpoint_dir)], env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pointer = checkpoint_dir / "latest.json"
    deadline = time.monotonic() + 120
    try:
        while not (pointer.exists() and json.loads(pointer.read_text())["round"] >= 1):
            assert process.poll() is None, "the run ended before its checkpoint of round 1"
            assert time.monotonic() < deadline, "no checkpoint of round 1 within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    last_round = json.loads(pointer.read_text())["round"]
    assert 1 <= last_round < 4

    copy = tmp_path / "copy"
    shutil.copytree(checkpoint_dir, copy)
    config = DistillConfig(**RESUME_CONFIG)
    resumed_student = fresh_student()
    resuming = dataclasses.replace(config, checkpoint_dir=str(checkpoint_dir))
    resumed = distill(cartpole_teacher, resumed_student, resuming)
    assert resumed.resumed_from == last_round + 1 and not resumed.interrupted

    uninterrupted = distill(cartpole_teacher, fresh_student(), config)
    assert resumed.num_rounds == uninterrupted.num_rounds == 5
    for name in ("env_steps", "beta", "buffer_size"):
        assert getattr(resumed, name) == getattr(uninterrupted, name)
    before = slice(0, last_round + 1)
    for name in ("loss", "agreement", "control_return", "student_return_mean", "normalized_score"):
        assert getattr(resumed, name)[before] == getattr(uninterrupted, name)[before], name
    assert resumed.teacher_return == uninterrupted.teacher_return

    again_student = fresh_student(5)  # its initial weights are replaced by the checkpoint's
    from_copy = dataclasses.replace(config, checkpoint_dir=str(copy))
    again = distill(cartpole_teacher, again_student, from_copy)
    assert comparable(again) == comparable(resumed)
    for a, b in zip(again_student.get_weights(), resumed_student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    finished = distill(cartpole_teacher, fresh_student(), from_copy)
    assert comparable(finished) == {**comparable(again), "resumed_from": 5}  # nothing left to run

    assert sorted(os.listdir(checkpoint_dir)) == ["latest.json", "round-000004"]
    with pytest.raises(CheckpointMismatchError, match="differ: seed") as error:
        distill(cartpole_teacher, fresh_student(),
                dataclasses.replace(config, seed=8, checkpoint_dir=str(checkpoint_dir)))
    assert "\n" not in str(error.value)


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(cartpole_teacher, tmp_path):
    path = tmp_path / "taken"
    path.write_text("")
    config = DistillConfig(**TINY, checkpoint_dir=str(path))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        distill(cartpole_teacher, fresh_student(), config)
