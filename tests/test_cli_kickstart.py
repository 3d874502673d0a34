"""``tfkd kickstart``, run as a user runs it: in a subprocess, on a tiny budget."""

import contextlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfkd import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The keys `distill` writes too (tests/test_cli.py): one results.json format.
TOP_KEYS = {"env", "seed", "eval_seeds", "episodes", "agreement", "config", "versions",
            "random", "teacher", "student", "interrupted", "history", "wall_time_s", "mode"}


def run_tfkd(*args, timeout=300):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "tfkd.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A linear CartPole controller as a .keras Q-network."""
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    weights = np.array([0.1, 0.5, 1.0, 0.5], np.float32)
    layer.set_weights([10.0 * np.stack([-weights, weights], axis=1)])
    path = tmp_path_factory.mktemp("kickstart") / "teacher.keras"
    model.save(path)
    return path


def test_kickstart_writes_results_student_and_tensorboard(teacher_file, tmp_path):
    out, board = tmp_path / "run", tmp_path / "board"
    run = run_tfkd("kickstart", "--teacher", teacher_file, "--env", "CartPole-v1",
                   "--steps", 600, "--schedule", "gated", "--loss", "centered_mse",
                   "--student-hidden", 8,
                   "--select-episodes", 2, "--eval-episodes", 2, "--tensorboard", board,
                   "--learning-rate", 5e-4, "--eval-every", 300, "--out", out, "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "kept the student of env step" in run.stdout and "95% CI" in run.stdout
    with open(out / "results.json", encoding="utf-8") as file:
        results = json.load(file, parse_constant=lambda name: pytest.fail(name))
    assert TOP_KEYS <= set(results) and results["mode"] == "kickstart (gated)"
    assert results["episodes"] == len(results["eval_seeds"]) == 2
    assert all(seed % 2 == 1 for seed in results["eval_seeds"])  # held-out seeds
    assert results["config"]["kickstart_config"]["coefficient"] == 1.0  # the default
    assert results["config"]["kickstart_config"]["loss"] == "centered_mse"
    assert results["config"]["dqn_config"]["hidden_units"] == [8]
    assert results["config"]["dqn_config"]["learning_rate"] == 5e-4
    assert results["config"]["dqn_config"]["eval_every"] == 300
    history = results["history"]
    assert len(history["eval_lambda"]) == len(history["eval_steps"]) >= 1
    assert results["student"]["params"] == 4 * 8 + 8 + 8 * 2 + 2
    assert (out / "student.keras").stat().st_size > 1000
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(board))


def test_help_documents_every_flag():
    parser = cli.build_parser()._subparsers._group_actions[0].choices["kickstart"]
    for action in parser._actions:
        assert action.help, action.option_strings
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {"--teacher", "--env", "--steps", "--schedule", "--seed", "--out", "--eval-episodes",
            "--select-episodes", "--tensorboard", "--checkpoint-dir"} <= flags


@pytest.mark.parametrize("argv, message", [
    (["--schedule", "cosine"], "--schedule"),
    (["--steps", "100", "--offline-steps", "100"], "offline_env_steps"),
    (["--offline-updates", "5"], "offline_updates needs offline_env_steps"),
    (["--loss", "centered_mse", "--temperature", "2"], "--temperature applies to --loss kl"),
])
def test_bad_settings_are_one_line_errors(teacher_file, capsys, argv, message):
    with pytest.raises(SystemExit) if argv[0] == "--schedule" else contextlib.nullcontext():
        status = cli.main(["kickstart", "--teacher", str(teacher_file), "--env", "CartPole-v1",
                           "--quiet", *argv])
        assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines

