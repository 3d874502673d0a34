"""``tfkd distill`` with several ``--teacher``: one multi-task student for
teachers of different envs, one student of an ensemble for teachers of one env."""

import pytest

from tfkd import cli
from tfkd.cli.parser import COMBINATIONS
from tfkd.distillation import ensemble

from test_cli import ROW_KEYS, TINY_DISTILL, _assert_one_line_error, _strict_load, run_tfkd


@pytest.fixture(scope="module")
def keras_teachers(tmp_path_factory):
    """Untrained .keras teachers: two for CartPole-v1, one for Acrobot-v1."""
    from tfkd.models import build_mlp

    folder = tmp_path_factory.mktemp("teachers")
    paths = {}
    for name, (shape, actions) in {"cartpole_a": ((4,), 2), "cartpole_b": ((4,), 2),
                                   "acrobot": ((6,), 3)}.items():
        paths[name] = folder / f"{name}.keras"
        build_mlp(shape, actions, hidden_units=(8,), name=name).save(paths[name])
    return paths


def test_teachers_of_two_envs_give_one_multi_task_student(tmp_path):
    """Teacher folders carry their env; the student gets a head per env."""
    from tfkd.models import build_mlp
    from tfkd.rl import DQNConfig, train_dqn

    teachers = []
    for env_id, shape, actions in (("CartPole-v1", (4,), 2), ("Acrobot-v1", (6,), 3)):
        # the folder `tfkd train-teacher --backend keras` writes, trained here
        # in-process: tests/test_cli.py runs the command itself
        config = DQNConfig(env_id=env_id, hidden_units=(8,), total_env_steps=200,
                           learning_starts=100, eval_every=200, eval_episodes=1, progress=False)
        train_dqn(build_mlp(shape, actions, config.hidden_units),
                  config, out_dir=str(tmp_path / env_id))
        teachers += ["--teacher", tmp_path / env_id]
    # each env its own budget: the last --steps wins over TINY_DISTILL's
    run = run_tfkd("distill", *teachers, "--out", tmp_path / "student", *TINY_DISTILL,
                   "--steps", 200, 104)
    assert run.returncode == 0, run.stderr
    assert "one student of" in run.stdout and "student (its head)" in run.stdout
    results = _strict_load(tmp_path / "student" / "results.json")
    assert results["envs"] == ["CartPole-v1", "Acrobot-v1"]
    for env_id, task in results["tasks"].items():
        assert ROW_KEYS <= set(task["student"]) and ROW_KEYS <= set(task["teacher"])
        assert task["student"]["mean_return"] is not None, env_id
        assert task["student"]["params"] < results["combined"]["student_params"]
    combined = results["combined"]
    assert combined["teachers_params"] == sum(
        task["teacher"]["params"] for task in results["tasks"].values())
    assert set(results["history"]["tasks"]) == {"CartPole-v1", "Acrobot-v1"}
    assert [results["history"]["tasks"][env_id]["env_steps"][-1]
            for env_id in ("CartPole-v1", "Acrobot-v1")] == [200, 104]

    import keras
    from tfkd.models import task_names

    student = keras.saving.load_model(tmp_path / "student" / "student.keras", safe_mode=True)
    assert task_names(student) == ["CartPole-v1", "Acrobot-v1"]

    # `evaluate` takes the multi-task student's network for the teacher's env
    run = run_tfkd("evaluate", "--teacher", tmp_path / "Acrobot-v1", "--student",
                   tmp_path / "student" / "student.keras", "--eval-episodes", 2, "--out",
                   tmp_path / "evaluation")
    assert run.returncode == 0, run.stderr
    evaluation = _strict_load(tmp_path / "evaluation" / "results.json")
    assert evaluation["env"] == "Acrobot-v1"
    assert evaluation["student"]["params"] == results["tasks"]["Acrobot-v1"]["student"]["params"]


def test_teachers_of_one_env_are_distilled_as_one(keras_teachers, tmp_path):
    combination = "most_confident"  # (both combinations: tests/distillation/test_ensemble.py)
    out = tmp_path / combination
    run = run_tfkd("distill", "--env", "CartPole-v1", "--teacher", keras_teachers["cartpole_a"],
                   "--teacher", keras_teachers["cartpole_b"], "--combine", combination,
                   "--out", out, *TINY_DISTILL)
    assert run.returncode == 0, run.stderr
    results = _strict_load(out / "results.json")
    assert results["env"] == "CartPole-v1" and results["config"]["combine"] == combination
    assert results["teacher"]["params"] == 2 * (4 * 8 + 8 + 8 * 2 + 2)  # both teachers


def test_the_parser_offers_the_library_combinations():
    assert COMBINATIONS == ensemble.COMBINATIONS


def test_mixed_teacher_envs_are_one_line_errors(keras_teachers, capsys):
    code = cli.main(["distill", "--env", "CartPole-v1", "--teacher", str(keras_teachers["cartpole_a"]),
                     "--teacher", str(keras_teachers["acrobot"]), "--quiet"])
    _assert_one_line_error(code, capsys.readouterr().err, "takes observations")


def test_a_minatar_teacher_is_trained_and_distilled(tmp_path):
    teacher = tmp_path / "teacher"
    run = run_tfkd("train-teacher", "--env", "MinAtar/Breakout-v1", "--backend", "keras",
                   "--steps", 300, "--eval-episodes", 1, "--select-episodes", 1, "--out",
                   teacher, "--quiet")
    assert run.returncode == 0, run.stderr
    run = run_tfkd("distill", "--teacher", teacher, "--out", tmp_path / "student", "--steps",
                   200, "--steps-per-round", 100, "--train-steps-per-round", 10,
                   "--select-episodes", 1, "--eval-episodes", 2, "--quiet")
    assert run.returncode == 0, run.stderr
    results = _strict_load(tmp_path / "student" / "results.json")
    assert results["env"] == "MinAtar/Breakout-v1"
    assert 7 * results["student"]["params"] < results["teacher"]["params"]


def test_minatar_needs_the_keras_backend(capsys):
    code = cli.main(["train-teacher", "--env", "MinAtar/Breakout-v1", "--steps", "100"])
    _assert_one_line_error(code, capsys.readouterr().err, "--backend keras")


def test_a_budget_per_teacher_needs_one_env_per_teacher(keras_teachers, capsys):
    code = cli.main(["distill", "--env", "CartPole-v1", "--teacher", str(keras_teachers["cartpole_a"]),
                     "--teacher", str(keras_teachers["cartpole_b"]), "--steps", "100", "200",
                     "--quiet"])
    _assert_one_line_error(code, capsys.readouterr().err, "one per --teacher of a multi-task run")


def test_max_q_needs_dqn_teacher_folders(keras_teachers, capsys):
    """A .keras file may output logits, whose per-action maximum means nothing."""
    code = cli.main(["distill", "--env", "CartPole-v1", "--teacher", str(keras_teachers["cartpole_a"]),
                     "--teacher", str(keras_teachers["cartpole_b"]), "--combine", "max_q",
                     "--quiet"])
    _assert_one_line_error(code, capsys.readouterr().err, "--combine max_q takes DQN teacher folders")
