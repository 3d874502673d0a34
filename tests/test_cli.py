"""The ``tfkd`` command on tiny budgets (in-process: ``tfkd.cli.main``)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tf_agents")

from tfkd import cli  # noqa: E402

TINY_DISTILL = ["--steps", "200", "--steps-per-round", "100", "--train-steps-per-round", "10",
                "--eval-episodes", "1", "--episodes", "2", "--quiet"]
REQUIRED_KEYS = {"env", "teacher", "student", "agreement", "episodes"}


def _check_results(path, env="CartPole-v1"):
    with open(path, encoding="utf-8") as file:
        results = json.load(file)
    assert REQUIRED_KEYS <= set(results)
    assert results["env"] == env and results["episodes"] == 2
    for who in ("teacher", "student"):
        assert set(results[who]) >= {"params", "mean_return", "std_return"}
        assert results[who]["mean_return"] > 0
    assert 0.0 <= results["agreement"] <= 1.0
    return results


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "teacher"
    assert cli.main(["train-teacher", "--steps", "200", "--hidden", "16", "--episodes", "2",
                     "--out", str(out), "--quiet"]) == 0
    return out


def test_train_teacher_distill_evaluate(teacher_dir, tmp_path, capsys):
    assert (teacher_dir / "teacher.json").is_file() and (teacher_dir / "policy").is_dir()
    run = tmp_path / "run"
    assert cli.main(["distill", "--teacher", str(teacher_dir), "--student-hidden", "4",
                     "--out", str(run), *TINY_DISTILL]) == 0
    results = _check_results(run / "results.json")
    assert results["student"]["params"] == 4 * 4 + 4 + 4 * 2 + 2
    assert (run / "distillation.png").stat().st_size > 1000
    assert "% of teacher" in capsys.readouterr().out
    evaluated = tmp_path / "evaluated"
    assert cli.main(["evaluate", "--teacher", str(teacher_dir), "--student",
                     str(run / "student.keras"), "--episodes", "2", "--out", str(evaluated)]) == 0
    _check_results(evaluated / "results.json")


def test_teacher_driven_mode_with_the_rusu_loss(teacher_dir, tmp_path):
    assert cli.main(["distill", "--teacher", str(teacher_dir), "--mode", "teacher",
                     "--loss", "q_value_kl", "--out", str(tmp_path), *TINY_DISTILL]) == 0
    assert _check_results(tmp_path / "results.json")["mode"] == "teacher-driven"


def test_demo_on_tiny_budget(tmp_path):
    assert cli.main(["demo", "--teacher-steps", "200", "--out", str(tmp_path),
                     *TINY_DISTILL]) == 0
    results = _check_results(tmp_path / "results.json")
    assert results["student"]["params"] * 10 <= results["teacher"]["params"]


@pytest.mark.parametrize("argv, message", [
    (["train-teacher", "--env", "Pendulum-v1", "--steps", "10"], "discrete action space"),
    (["train-teacher", "--env", "NoSuchEnv-v0", "--steps", "10"], "NoSuchEnv-v0"),
    (["distill", "--teacher", "/nonexistent/teacher"], "teacher.json"),
    (["evaluate", "--teacher", "/nonexistent/teacher.keras"], "no such model file"),
    (["distill", "--teacher", "/nonexistent/teacher", "--loss", "mse", "--temperature", "2"],
     "--temperature applies to"),
])
def test_bad_input_gives_a_clear_error(argv, message):
    with pytest.raises((SystemExit, ValueError), match=message):
        cli.main(argv)


def test_corrupt_keras_file_is_rejected(tmp_path):
    bad = tmp_path / "teacher.keras"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(SystemExit, match="cannot load"):
        cli.main(["evaluate", "--teacher", str(bad), "--env", "CartPole-v1"])


def test_console_script_help():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-m", "tfkd.cli", "--help"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    for command in ("train-teacher", "distill", "evaluate", "demo"):
        assert command in run.stdout
