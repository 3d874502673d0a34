"""The ``tfkd`` command, run as a user runs it: in subprocesses, on tiny budgets.

Cheap checks (user errors found before training) call ``tfkd.cli.main``
in-process; everything that trains runs ``python -m tfkd.cli``.
"""

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tfkd import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DISTILL = ["--student-hidden", "4", "--steps", "200", "--steps-per-round", "100",
                "--train-steps-per-round", "10", "--select-episodes", "1",
                "--eval-episodes", "2", "--quiet"]
NOISE = ("absl", "cuda", "deprecationwarning", "autograph", "traceback")
ROW_KEYS = {"params", "mean_return", "std_return", "ci95", "normalized_score"}
TOP_KEYS = {"env", "seed", "eval_seeds", "episodes", "agreement", "config", "versions",
            "random", "teacher", "student", "interrupted"}


def _env():
    """The environment a user has: no TF logging settings of ours, this checkout importable."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def run_tfkd(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tfkd.cli", *map(str, args)], env=_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _strict_load(path):
    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    with open(path, encoding="utf-8") as file:
        return json.load(file, parse_constant=reject)


def _assert_quiet(stderr):
    noisy = [line for line in stderr.splitlines() if any(word in line.lower() for word in NOISE)]
    assert not noisy, "\n".join(noisy)


def _assert_one_line_error(returncode, stderr, message):
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert message in lines[0], lines[0]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A TF-Agents teacher from `tfkd train-teacher` (kept with its stderr)."""
    pytest.importorskip("tf_agents")
    out = tmp_path_factory.mktemp("cli") / "teacher"
    run = run_tfkd("train-teacher", "--steps", 200, "--hidden", 16, "--eval-episodes", 2,
                   "--out", out, "--quiet")
    assert run.returncode == 0, run.stderr
    (out / "stderr.txt").write_text(run.stderr)
    return out


@pytest.fixture(scope="module")
def distilled(teacher_dir, tmp_path_factory):
    """Two `tfkd distill` runs with the same arguments and seed."""
    runs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp("distill") / name
        run = run_tfkd("distill", "--teacher", teacher_dir, "--seed", 3, "--out", out,
                       *TINY_DISTILL)
        assert run.returncode == 0, run.stderr
        runs.append((out, run))
    return runs


@pytest.fixture(scope="module")
def keras_teacher(tmp_path_factory):
    """An untrained CartPole MLP saved as a .keras teacher (no training needed)."""
    from tfkd.models import build_mlp

    path = tmp_path_factory.mktemp("keras") / "teacher.keras"
    build_mlp((4,), 2, hidden_units=(8,), name="teacher").save(path)
    return path


# ------------------------------------------------------------- normal runs


def test_train_teacher_saves_a_teacher_quietly(teacher_dir):
    assert (teacher_dir / "teacher.json").is_file() and (teacher_dir / "policy").is_dir()
    assert not [name for name in os.listdir(teacher_dir) if name.startswith(".staging-")]
    _assert_quiet((teacher_dir / "stderr.txt").read_text())


def test_distill_writes_strict_results_with_the_fixed_interface(distilled):
    out, run = distilled[0]
    _assert_quiet(run.stderr)
    assert "kept the student of round" in run.stdout
    assert "% of teacher (normalised)" in run.stdout and "95% CI" in run.stdout
    results = _strict_load(out / "results.json")
    assert TOP_KEYS <= set(results)
    assert results["env"] == "CartPole-v1" and results["seed"] == 3
    assert results["episodes"] == len(results["eval_seeds"]) == 2
    assert results["interrupted"] is False and results["mode"] == "student-driven"
    for who in ("teacher", "student"):
        row = results[who]
        assert ROW_KEYS <= set(row)
        assert row["mean_return"] > 0 and len(row["ci95"]) == 2
        assert row["ci95"][0] <= row["mean_return"] <= row["ci95"][1]
    assert results["student"]["params"] == 4 * 4 + 4 + 4 * 2 + 2
    assert "mean_return" in results["random"]
    assert 0.0 <= results["agreement"] <= 1.0
    assert results["config"]["distill_config"]["keep_best"] is True
    assert results["config"]["select_episodes"] == 1
    assert set(results["versions"]) == {"tfkd", "tensorflow", "keras", "gymnasium",
                                        "git_commit"}
    assert (out / "student.keras").stat().st_size > 1000
    assert (out / "distillation.png").stat().st_size > 1000


def _numbers(results):
    """results.json without what legitimately differs between two runs."""
    results = dict(results, config=dict(results["config"], out=None), wall_time_s=None)
    results["history"] = dict(results["history"], wall_time_s=None)
    return results


def test_same_seed_gives_identical_results(distilled):
    (first, _), (second, _) = distilled
    assert _numbers(_strict_load(first / "results.json")) == \
        _numbers(_strict_load(second / "results.json"))


def test_evaluate_reports_on_the_held_out_seeds(teacher_dir, distilled, tmp_path):
    out, _ = distilled[0]
    run = run_tfkd("evaluate", "--teacher", teacher_dir, "--student", out / "student.keras",
                   "--seed", 3, "--eval-episodes", 2, "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    _assert_quiet(run.stderr)
    evaluated = _strict_load(tmp_path / "results.json")
    distilled_results = _strict_load(out / "results.json")
    assert evaluated["eval_seeds"] == distilled_results["eval_seeds"]
    assert evaluated["student"]["mean_return"] == distilled_results["student"]["mean_return"]
    assert TOP_KEYS <= set(evaluated)


@pytest.mark.slow
def test_demo_on_tiny_budget(tmp_path):
    run = run_tfkd("demo", "--teacher-steps", 200, "--out", tmp_path,
                   *TINY_DISTILL[2:])  # the demo's student is fixed: no --student-hidden
    assert run.returncode == 0, run.stderr
    results = _strict_load(tmp_path / "results.json")
    assert results["student"]["params"] * 10 <= results["teacher"]["params"]
    assert (tmp_path / "teacher" / "teacher.json").is_file()


@pytest.mark.slow
def test_teacher_driven_mode_with_the_rusu_loss(teacher_dir, tmp_path):
    run = run_tfkd("distill", "--teacher", teacher_dir, "--mode", "teacher", "--loss",
                   "q_value_kl", "--out", tmp_path, *TINY_DISTILL)
    assert run.returncode == 0, run.stderr
    assert _strict_load(tmp_path / "results.json")["mode"] == "teacher-driven"


@pytest.mark.slow
def test_keras_backend_checkpoints_and_logs(tmp_path):
    run = run_tfkd("train-teacher", "--backend", "keras", "--steps", 300, "--hidden", 8,
                   "--eval-episodes", 2, "--out", tmp_path / "teacher", "--checkpoint-dir",
                   tmp_path / "ckpt", "--tensorboard", tmp_path / "tb", "--quiet")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "teacher" / "teacher.keras").is_file()
    assert os.listdir(tmp_path / "ckpt") and os.listdir(tmp_path / "tb")


def test_ctrl_c_saves_the_student_so_far(keras_teacher, tmp_path):
    command = [sys.executable, "-m", "tfkd.cli", "distill", "--teacher", str(keras_teacher),
               "--env", "CartPole-v1", "--steps", "10000000", "--steps-per-round", "100",
               "--train-steps-per-round", "10", "--select-episodes", "1", "--quiet",
               "--out", str(tmp_path)]
    # A test runner started in the background (as CI may be) inherits an ignored
    # SIGINT, which a user's terminal never gives: the run gets the default back.
    # PYTHONFAULTHANDLER: if the run hangs, SIGABRT makes it print every thread's stack.
    process = subprocess.Popen(command, env={**_env(), "PYTHONFAULTHANDLER": "1"}, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().startswith("distilling")
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            stdout, stderr = process.communicate(timeout=60)
            pytest.fail(f"no exit within 300 s of Ctrl-C; its stacks:\n{stderr[-6000:]}")
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    results = _strict_load(tmp_path / "results.json")
    assert results["interrupted"] is True
    assert (tmp_path / "student.keras").stat().st_size > 1000
    assert "written to" in stdout


# ------------------------------------------------------------------ the lock


def test_a_held_out_folder_stops_a_second_run_at_once(tmp_path):
    with open(tmp_path / ".tfkd.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.perf_counter()
        run = run_tfkd("distill", "--teacher", tmp_path / "t.keras", "--env", "CartPole-v1",
                       "--out", tmp_path, timeout=60)
        seconds = time.perf_counter() - start
    _assert_one_line_error(run.returncode, run.stderr, "in use by another tfkd run")
    assert seconds < 20  # before TensorFlow is even imported


# ---------------------------------------------------------- the command line


def test_version():
    run = run_tfkd("--version", timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("tfkd ")


@pytest.mark.parametrize("command", [None, "train-teacher", "distill", "evaluate", "demo"])
def test_help_documents_every_flag(command):
    run = run_tfkd(*([command] if command else []), "--help", timeout=60)
    assert run.returncode == 0, run.stderr
    parser = cli.build_parser()
    if command:
        parser = parser._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        assert action.help, f"{command}: {action.option_strings} has no help"
    flags = [flag for action in parser._actions for flag in action.option_strings]
    assert "--episodes" not in flags  # --select-episodes or --eval-episodes, never ambiguous


def test_recipe_flags_reach_the_dqn_settings():
    from tfkd.cli.commands import _dqn_config

    argv = ["train-teacher", "--env", "CartPole-v1", "--steps", "200000"]
    parser = cli.build_parser()
    default = _dqn_config(parser.parse_args(argv))
    assert (default.learning_rate, default.eval_every) == (1e-3, 2_500)
    assert default.epsilon(10_000) == pytest.approx(0.02)
    tuned = _dqn_config(parser.parse_args(argv + [
        "--learning-rate", "2.5e-4", "--epsilon-steps", "100000", "--eval-every", "10000"]))
    assert (tuned.learning_rate, tuned.eval_every) == (2.5e-4, 10_000)
    assert tuned.epsilon(50_000) == pytest.approx(0.51)
    assert tuned.epsilon(100_000) == pytest.approx(0.02)
    assert (default.buffer_capacity, default.learning_starts, default.train_every,
            default.gradient_steps, default.target_update_every) == (50_000, 1_000, 16, 8, 500)
    replay = _dqn_config(parser.parse_args(argv + [
        "--buffer", "100000", "--learning-starts", "5000", "--train-every", "4",
        "--gradient-steps", "1", "--target-update-every", "1000", "--epsilon-final", "0.05",
        "--epsilon-steps", "100000"]))
    assert (replay.buffer_capacity, replay.learning_starts, replay.train_every,
            replay.gradient_steps, replay.target_update_every) == (100_000, 5_000, 4, 1, 1_000)
    assert replay.epsilon(50_000) == pytest.approx(0.525)
    assert replay.epsilon(200_000) == pytest.approx(0.05)
    with pytest.raises(cli.CliError, match="leaves no training"):
        _dqn_config(parser.parse_args(argv[:-1] + ["1000", "--learning-starts", "1000"]))


def test_selection_and_report_episodes_are_told_apart():
    run = run_tfkd("distill", "--help", timeout=60)
    assert "--select-episodes" in run.stdout and "--eval-episodes" in run.stdout
    assert "held-out" in run.stdout and "best round is kept" in run.stdout.replace("\n", " ")


@pytest.mark.parametrize("argv, message", [
    (["distill", "--teacher", "x", "--seed", "-1"], "--seed"),
    (["evaluate", "--teacher", "x", "--eval-episodes", "-3"], "--eval-episodes"),
    (["distill", "--teacher", "x", "--target-return", "nan"], "--target-return"),
    (["distill", "--teacher", "x", "--temperature", "inf"], "--temperature"),
    (["train-teacher", "--hidden", "0"], "--hidden"),
    (["train-teacher", "--epsilon-final", "1.5"], "--epsilon-final"),
    (["kickstart", "--teacher", "x", "--buffer", "0"], "--buffer"),
])
def test_bad_values_are_one_line_errors(argv, message):
    run = run_tfkd(*argv, timeout=60)
    _assert_one_line_error(run.returncode, run.stderr, message)


# --------------------------------------------- user errors found before training


def _error_of(capsys, argv):
    assert cli.main([str(arg) for arg in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfkd: "), captured.err
    return lines[0]


def test_teacher_of_another_env(teacher_dir, capsys):
    message = _error_of(capsys, ["distill", "--teacher", teacher_dir, "--env", "Acrobot-v1"])
    for part in ("CartPole-v1", "Acrobot-v1", "(4,)", "(6,)"):
        assert part in message


def test_keras_teacher_of_another_env(keras_teacher, capsys):
    message = _error_of(capsys, ["evaluate", "--teacher", keras_teacher, "--env", "Acrobot-v1"])
    for part in ("Acrobot-v1", "(4,)", "(6,)"):
        assert part in message


def test_unknown_env_in_a_teacher_folder(teacher_dir, tmp_path, capsys):
    copy = tmp_path / "teacher"
    shutil.copytree(teacher_dir, copy)
    description = json.loads((copy / "teacher.json").read_text())
    description["env_id"] = "NoSuchEnv-v9"
    (copy / "teacher.json").write_text(json.dumps(description))
    assert "NoSuchEnv" in _error_of(capsys, ["distill", "--teacher", copy])


def test_student_that_does_not_fit_the_env(keras_teacher, tmp_path, capsys):
    from tfkd.models import build_mlp

    student = tmp_path / "student.keras"
    build_mlp((3,), 2, hidden_units=(4,)).save(student)
    message = _error_of(capsys, ["evaluate", "--teacher", keras_teacher, "--env", "CartPole-v1",
                                 "--student", student])
    assert "(3,)" in message and "(4,)" in message


def test_tuple_and_dict_observation_spaces(capsys):
    import gymnasium as gym

    class DictObservations(gym.Env):
        observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})
        action_space = gym.spaces.Discrete(2)

    if "TfkdDictObservations-v0" not in gym.registry:
        gym.register("TfkdDictObservations-v0", entry_point=DictObservations)
    assert "Blackjack-v1" in _error_of(capsys, ["train-teacher", "--env", "Blackjack-v1"])
    assert "Dict" in _error_of(capsys, ["train-teacher", "--env", "TfkdDictObservations-v0"])


@pytest.mark.parametrize("argv, message", [
    (["train-teacher", "--env", "Pendulum-v1", "--steps", "10"], "discrete action space"),
    (["train-teacher", "--env", "NoSuchEnv-v0", "--steps", "10"], "NoSuchEnv-v0"),
    (["distill", "--teacher", "/nonexistent/teacher"], "No teacher folder"),
    (["evaluate", "--teacher", "/nonexistent/teacher.keras", "--env", "CartPole-v1"],
     "no such teacher model file"),
    (["evaluate", "--teacher", "/nonexistent/teacher.keras"], "--env is needed"),
    (["distill", "--teacher", "x", "--loss", "mse", "--temperature", "2"],
     "--temperature applies to"),
    (["distill", "--teacher", "x", "--ray-address", "auto"], "--ray-address needs --workers"),
])
def test_clear_errors(argv, message, capsys):
    assert message in _error_of(capsys, argv)


def test_corrupt_keras_file(tmp_path, capsys):
    bad = tmp_path / "teacher.keras"
    bad.write_bytes(b"not a zip archive")
    assert "the teacher: Cannot load" in _error_of(
        capsys, ["evaluate", "--teacher", bad, "--env", "CartPole-v1"])


def test_out_and_checkpoint_dir_are_checked_first(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "is a file" in _error_of(capsys, ["distill", "--teacher", "x", "--out", a_file])
    assert "--checkpoint-dir" in _error_of(
        capsys, ["distill", "--teacher", "x", "--checkpoint-dir", a_file / "sub"])


def test_a_failed_write_leaves_the_previous_outputs(tmp_path):
    from tfkd.cli.output import OutputDir

    with OutputDir(str(tmp_path)) as out, out.staging() as folder:
        for name, text in (("results.json", "{}"), ("student.keras", "first")):
            with open(os.path.join(folder, name), "w") as file:
                file.write(text)
    with OutputDir(str(tmp_path)) as out, pytest.raises(RuntimeError):
        with out.staging() as folder:
            with open(os.path.join(folder, "student.keras"), "w") as file:
                file.write("second")
            raise RuntimeError("killed before the commit")
    assert (tmp_path / "student.keras").read_text() == "first"
    assert (tmp_path / "results.json").read_text() == "{}"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging-")]


def test_a_rerun_with_the_checkpoint_dir_resumes_and_says_so(teacher_dir, tmp_path):
    command = ["distill", "--teacher", teacher_dir, "--checkpoint-dir", tmp_path / "ckpt",
               "--out", tmp_path / "out", *TINY_DISTILL]
    first = run_tfkd(*command)
    assert first.returncode == 0 and "resumed" not in first.stdout, first.stderr
    results = _strict_load(tmp_path / "out" / "results.json")
    again = run_tfkd(*command)  # a finished run: every round is restored, none is run again
    assert again.returncode == 0, again.stderr
    assert re.search(r"resumed from .*: rounds 1-\d+ restored, 0 run now", again.stdout)
    assert _strict_load(tmp_path / "out" / "results.json")["student"] == results["student"]


def test_workers_refuse_a_tf_agents_teacher_before_training(teacher_dir, capsys):
    pytest.importorskip("ray")
    message = _error_of(capsys, ["distill", "--teacher", teacher_dir, "--workers", "2",
                                 "--steps", "200", "--steps-per-round", "100"])
    assert "Keras 3 model" in message and "--backend keras" in message
