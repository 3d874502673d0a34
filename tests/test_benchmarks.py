"""Each benchmark script, run as a user runs it with ``--smoke`` (tiny sizes, seconds),
and the committed teachers the benchmarks distil."""

import fcntl
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tfkd.rl import evaluate_policy, held_out_seeds
from tfkd.rl.dqn import load_dqn_teacher

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def run_benchmark(name, *args, cwd, expect_error=False):
    """The script's stdout; with ``expect_error`` its last stderr line, after checking it failed."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    env.pop("TF_USE_LEGACY_KERAS", None)  # the benchmarks use Keras 3 only
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=600)
    if expect_error:
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
        return run.stderr.strip().splitlines()[-1]
    assert run.returncode == 0, f"{name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run.stdout


def _strict_load(path):
    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    with open(path, encoding="utf-8") as file:
        return json.load(file, parse_constant=reject)


def test_rl_smoke(tmp_path):
    out = tmp_path / "results"
    stdout = run_benchmark("rl.py", "--smoke", "--seeds", "0", "1", "--out", out, cwd=tmp_path)
    assert (out / "teachers" / "CartPole-v1-32x32" / "teacher.json").is_file()
    assert (out / "rl" / "CartPole-v1.png").is_file()
    result = _strict_load(out / "rl" / "CartPole-v1.json")
    assert result["env"] == "CartPole-v1" and result["seeds"] == [0, 1]
    methods = ["teacher (DQN)", "random", "teacher-driven", "student-driven", "DQN from scratch"]
    assert [entry["method"] for entry in result["summary"]] == methods
    for run in result["per_seed"]:
        rows = {row["method"]: row for row in run["rows"]}
        assert set(rows) == set(methods)
        assert rows["random"]["normalized_score"] == 0.0
        assert rows["teacher (DQN)"]["normalized_score"] == 1.0
        # every row of a seed is scored on that seed's held-out episodes
        assert len(run["eval_seeds"]) == result["episodes"]
        assert all(episode % 2 == 1 for episode in run["eval_seeds"])
    for entry in result["summary"]:
        assert entry["mean_return"]["n"] == 2
        low, high = entry["mean_return"]["ci95_bootstrap"]
        assert low <= entry["mean_return"]["mean"] <= high
    assert "| CartPole-v1 | student-driven |" in stdout

    # a rerun finds the cached teacher and the saved seeds; --report prints them
    again = run_benchmark("rl.py", "--smoke", "--seeds", "0", "1", "--out", out, cwd=tmp_path)
    assert "teacher: loaded" in again and again.count("reused") == 2
    report = run_benchmark("rl.py", "--report", "--out", out, cwd=tmp_path)
    assert "| CartPole-v1 | DQN from scratch |" in report

    # deploy_scores.py exports these students, one per seed
    stdout = run_benchmark("deploy_scores.py", "--smoke", "--results", out, "--seeds", 0, 1,
                           cwd=tmp_path)
    assert stdout.count("exporting") == 2
    assert (out / "deploy_scores" / "CartPole-v1.png").is_file()
    result = _strict_load(out / "deploy_scores" / "CartPole-v1.json")
    summary = {entry["artefact"]: entry for entry in result["summary"]}
    assert {"keras", "savedmodel", "tflite", "tflite-int8", "qat-tflite-int8",
            "pruned-tflite-int8"} <= set(summary)
    for name in ("savedmodel", "tflite"):  # one float network: the same episodes
        assert summary[name]["score_minus_float"]["values"] == [0.0, 0.0]
        assert summary[name]["agreement"]["values"] == [1.0, 1.0]
    for entry in summary.values():
        assert entry["normalized_score"]["n"] == 2
    again = run_benchmark("deploy_scores.py", "--smoke", "--results", out, "--seeds", 0, 1,
                          cwd=tmp_path)
    assert again.count("reused") == 2 and "exporting" not in again
    error = run_benchmark("deploy_scores.py", "--smoke", "--results", out, "--seeds", 7,
                          cwd=tmp_path, expect_error=True)
    assert error.startswith("error: no student of seed(s) 7")


def test_distiller_smoke(tmp_path):
    out = tmp_path / "distiller.json"
    stdout = run_benchmark("distiller.py", "--smoke", "--out", out, cwd=tmp_path)
    result = _strict_load(out)
    assert {row["alternative"] for row in result["rows"]} >= {
        "keras (KLDivergence)", "tfkd (default: cached teacher)", "tfkd live (cpp)"}
    assert "| tfkd live (tf) |" in stdout


def test_kernel_smoke(tmp_path):
    out = tmp_path / "kernel.json"
    stdout = run_benchmark("kernel.py", "--smoke", "--out", out, cwd=tmp_path)
    result = _strict_load(out)
    assert [(row["batch"], row["actions"]) for row in result["rows"]] == [(256, 4)]
    assert "tfkd cpp (TF op)" in stdout


def test_multitask_smoke(tmp_path):
    out = tmp_path / "results"
    stdout = run_benchmark("multitask.py", "--smoke", "--out", out, cwd=tmp_path)
    multitask = _strict_load(out / "multitask" / "multitask.json")
    methods = ("multi-task student", "multi-task DQN from scratch")
    assert [(e["method"], e["env"]) for e in multitask["summary"]] == [
        (method, env) for env in ("CartPole-v1", "Acrobot-v1") for method in methods]
    teacher_params = {e["env"]: e["teacher_params"] for e in multitask["summary"]}
    params = {e["params"] for e in multitask["summary"]}  # one network architecture
    assert len(params) == 1 and params.pop() * 10 <= sum(teacher_params.values())
    for row in multitask["per_seed"][0]:
        assert row["random_return"] is not None and row["teacher_return"] is not None
        if row["method"] == "multi-task DQN from scratch":
            assert row["env_steps"] == 200  # the students' budget per env (SMOKE_BUDGET)
    assert list(multitask["settings"]["scratch_dqn"]) == ["multi-task DQN from scratch"]
    assert len(multitask["settings"]["scratch_dqn"]["multi-task DQN from scratch"]) == 2
    assert "| Acrobot-v1 | multi-task DQN from scratch |" in stdout
    # MinAtar: the committed CNN teachers of two games, one CNN student
    assert not list((out / "multitask" / "multitask").glob("*.checkpoints"))  # seed 0 saved
    minatar = _strict_load(out / "multitask" / "minatar.json")
    games = ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1")
    scratch = [f"multi-task DQN from scratch ({game} recipe)" for game in ("Breakout",
                                                                          "SpaceInvaders")]
    assert [(e["method"], e["env"]) for e in minatar["summary"]] == [
        (method, game) for game in games for method in ("multi-task student", *scratch)]
    assert list(minatar["settings"]["scratch_dqn"]) == scratch
    teacher_params = {e["env"]: e["teacher_params"] for e in minatar["summary"]}
    params = {e["params"] for e in minatar["summary"]}
    assert len(params) == 1 and params.pop() * 4 <= sum(teacher_params.values())
    assert all(row["teacher_return"] > row["random_return"] for row in minatar["per_seed"][0])
    assert "| MinAtar/Breakout-v1 | multi-task student |" in stdout
    multiteacher = _strict_load(out / "multitask" / "multiteacher.json")
    methods = [entry["method"] for entry in multiteacher["summary"]]
    assert "student of ensemble (max_q)" in methods and "student of teacher 2" in methods
    assert "| CartPole-v1 | student of ensemble (most_confident) |" in stdout
    # another seed, as a separate process would run it: seed 0 is reused, both are summed up
    stdout = run_benchmark("multitask.py", "--smoke", "--part", "multiteacher", "--seeds", "1",
                           "--out", out, cwd=tmp_path)
    assert "multiteacher seed 1:" in stdout and "multiteacher seed 0:" not in stdout
    assert _strict_load(out / "multitask" / "multiteacher.json")["seeds"] == [0, 1]
    # a seed's checkpoint that cannot be resumed is a one-line error that says what to do
    damaged = out / "multitask" / "multitask" / "seed-1.checkpoints" / "student"
    damaged.mkdir(parents=True)
    (damaged / "latest.json").write_text("{", "utf-8")
    error = run_benchmark("multitask.py", "--smoke", "--part", "multitask", "--seeds", "1",
                          "--out", out, cwd=tmp_path, expect_error=True)
    assert error.startswith("error: Cannot resume from") and error.endswith("anew)")
    # a seed that another process is running is refused, not run twice into the same files
    with open(out / "multitask" / "multiteacher" / "seed-1.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        error = run_benchmark("multitask.py", "--smoke", "--part", "multiteacher", "--seeds",
                              "1", "--fresh", "--out", out, cwd=tmp_path, expect_error=True)
    assert error.startswith("error: multiteacher seed 1 is running in another process")
    # a damaged seed file is a one-line error naming it, and the other seed's file is kept
    (out / "multitask" / "multiteacher" / "seed-1.json").write_text('{"format": ', "utf-8")
    error = run_benchmark("multitask.py", "--smoke", "--part", "multiteacher", "--seeds", "0",
                          "--out", out, cwd=tmp_path, expect_error=True)
    assert error.startswith("error: cannot read the saved results") and "seed-1.json" in error
    assert _strict_load(out / "multitask" / "multiteacher" / "seed-0.json")["rows"]


# The classic-control teachers the benchmarks distil, committed, and a
# floor for their mean return on 5 held-out episodes: well below their return on
# 100 (teachers/README.md), far above random play (21, -497 and -193).
COMMITTED_CLASSIC_TEACHERS = {
    "CartPole-v1-256x256": 475.0,
    "Acrobot-v1-256x256": -100.0,
    "LunarLander-v3-256x256": 100.0,
    **{f"LunarLander-v3-256x256-300000steps-seed{k}": 200.0 for k in range(3)},
}
# kickstart.py's weak teachers: far above random play, far below the strong ones.
COMMITTED_WEAK_TEACHERS = {"LunarLander-v3-weak-256x256": (-100.0, 100.0),
                           "CartPole-v1-weak-256x256": (100.0, 300.0)}


def test_committed_classic_teachers_are_the_benchmark_recipes(tmp_path):
    """multitask.py, rl.py (thus peers, scaling) and kickstart.py load the committed
    teachers, each teacher.json checked against the recipe in the code; none is trained."""
    load = ("import argparse, kickstart, multitask, rl\n"
            "args = argparse.Namespace(smoke=False, retrain_teachers=False, out='unused')\n"
            "for part in ('multitask', 'multiteacher'):\n"
            "    multitask.classic_teachers(part, args)\n"
            "for env_id, setup in rl.SETUPS.items():\n"
            "    rl.teacher_for(env_id, setup, 'unused')\n"
            "for env_id, setup in kickstart.SETUPS.items():\n"
            "    kickstart.weak_teacher_for(env_id, setup, 'unused')\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(REPO), str(BENCHMARKS)]))
    env.pop("TF_USE_LEGACY_KERAS", None)
    run = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = [line.removeprefix("teacher: loaded ").removeprefix("weak teacher: ")
              for line in run.stdout.splitlines() if "teacher: " in line]
    assert loaded == [str(BENCHMARKS / "teachers" / name) for name in [
        *COMMITTED_CLASSIC_TEACHERS, "CartPole-v1-256x256", "LunarLander-v3-256x256",
        *COMMITTED_WEAK_TEACHERS]]
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("name", [*COMMITTED_CLASSIC_TEACHERS, *COMMITTED_WEAK_TEACHERS])
def test_committed_classic_teachers_play_their_envs(name):
    teacher, description = load_dqn_teacher(BENCHMARKS / "teachers" / name)
    episodes = held_out_seeds(description["config"]["seed"], 5)
    returns = evaluate_policy(description["env_id"], teacher, episodes)
    low, high = COMMITTED_WEAK_TEACHERS.get(name, (COMMITTED_CLASSIC_TEACHERS.get(name), None))
    assert returns.mean >= low and (high is None or returns.mean <= high), returns


def test_serve_smoke(tmp_path):
    out = tmp_path / "serve.json"
    stdout = run_benchmark("serve.py", "--smoke", "--out", out, cwd=tmp_path)  # installs wrk
    result = _strict_load(out)
    assert [row["configuration"] for row in result["rows"]] == [
        "batched", "unbatched", "savedmodel, batched", "savedmodel, unbatched"]
    for row in result["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["exit_status"] == 0, row
    assert result["rows"][1]["mean_batch_rows"] == result["rows"][3]["mean_batch_rows"] == 1.0
    assert "| batched |" in stdout

def test_deploy_smoke(tmp_path):
    out = tmp_path / "deploy.json"
    stdout = run_benchmark("deploy.py", "--smoke", "--out", out, cwd=tmp_path)
    result = _strict_load(out)
    rows = {row["artefact"]: row for row in result["rows"]}
    assert {"teacher (Keras eager)", "keras", "savedmodel", "tflite", "tflite-int8"} <= set(rows)
    for row in rows.values():
        assert row["latency_us_b1"]["min"] <= row["latency_us_b1"]["median"] \
            <= row["latency_us_b1"]["max"]
        assert len(row["latency_us_b1"]["runs"]) == 2
    assert rows["tflite"]["agreement"] == 1.0
    assert "| tflite-int8 |" in stdout


def test_kickstart_smoke(tmp_path):
    out = tmp_path / "results"
    stdout = run_benchmark("kickstart.py", "--smoke", "--seeds", "0", "1", "--out", out,
                           cwd=tmp_path)
    assert (out / "teachers" / "CartPole-v1-weak-32x32" / "teacher.json").is_file()
    assert (out / "kickstart" / "CartPole-v1.png").is_file()
    result = _strict_load(out / "kickstart" / "CartPole-v1.json")
    assert result["seeds"] == [0, 1]
    methods = [entry["method"] for entry in result["summary"]]
    assert methods == ["weak teacher", "random", "kickstart (constant)", "kickstart (linear)",
                       "kickstart (exponential)", "kickstart (gated)",
                       "kickstart (linear, QDagger's KL)", "DQN from scratch",
                       "distillation (DAgger)"]
    for entry in result["summary"][2:]:
        assert entry["mean_return"]["n"] == 2 and entry["curve"]["steps"]
    for seed in (0, 1):
        run = _strict_load(out / "kickstart" / "CartPole-v1" / f"seed-{seed}" /
                           "kickstart-gated.json")
        assert all(episode % 2 == 1 for episode in run["eval_seeds"])  # held-out
        (gated,) = run["rows"]
        assert len(gated["history"]["eval_lambda"]) == len(gated["history"]["eval_steps"])
        kickstarts = run["settings"]["setup"]["kickstarts"]
        assert kickstarts["kickstart (exponential)"]["schedule"] == "exponential"
        assert kickstarts["kickstart (exponential)"]["loss"] == "centered_mse"
        assert kickstarts["kickstart (linear, QDagger's KL)"]["loss"] == "kl"
    assert "| CartPole-v1 | kickstart (gated) |" in stdout
    # a rerun reuses every saved row (7 methods x 2 seeds); --report prints the table
    again = run_benchmark("kickstart.py", "--smoke", "--seeds", "0", "1", "--out", out,
                          cwd=tmp_path)
    assert again.count("reused") == 14
    report = run_benchmark("kickstart.py", "--report", "--out", out, cwd=tmp_path)
    assert "| CartPole-v1 | distillation (DAgger) |" in report


@pytest.mark.slow
def test_scaling_smoke(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "results"
    stdout = run_benchmark("scaling.py", "--smoke", "--out", out, "--teachers", out, cwd=tmp_path)
    result = _strict_load(out / "scaling.json")
    (cartpole,) = result["results"]
    assert [row["workers"] for row in cartpole["workers"]] == [1, 2]
    assert all(row["steps_per_s"] > 0 and row["bytes_per_step"] == 24 for row in cartpole["workers"])
    assert cartpole["workers"][0]["speedup_vs_1"] == 1.0
    assert "| CartPole-v1 | 2 Ray worker(s) |" in stdout


@pytest.mark.slow
def test_profile_loop_smoke(tmp_path):
    out = tmp_path / "results"
    stdout = run_benchmark("profile_loop.py", "--smoke", "--controls", "student", "--out", out,
                           "--teachers", out, cwd=tmp_path)
    (run,) = _strict_load(out / "profile_loop.json")["runs"]
    phases = run["phases"]
    assert sum(p["seconds"] for p in phases.values()) == pytest.approx(run["total_s"])
    assert phases["fit: training steps"]["calls"] == 3  # one fit per round
    assert phases["teacher labelling"]["calls"] == 3  # one batched labelling per round
    assert run["train_step_traces_after_each_round"] == [1, 1, 1]  # never traced again
    assert "| fit: training steps |" in stdout


PEERS_TFKD = ("tfkd student-driven", "tfkd teacher-driven")


def test_peers_tfkd_side_smoke(tmp_path):
    # tfkd's two methods only: the imitation side needs its own venv (the slow test below).
    out = tmp_path / "results"
    stdout = run_benchmark("peers.py", "--smoke", "--methods", *PEERS_TFKD, "--out", out,
                           cwd=tmp_path)
    result = _strict_load(out / "peers" / "CartPole-v1.json")
    assert [e["method"] for e in result["summary"]["methods"]] == list(PEERS_TFKD)
    assert result["summary"]["ratios"] == []
    budget = result["settings"]["setup"]["distill_steps"]
    for method in PEERS_TFKD:
        record = _strict_load(out / "peers" / "CartPole-v1" / "seed-0" /
                              f"{method.replace(' ', '-')}.json")
        row = record["row"]
        assert all(episode % 2 == 1 for episode in record["eval_seeds"])  # held-out
        steps = [point["env_steps"] for point in row["curve"]]
        assert steps == sorted(steps) and 0 < steps[-1] <= budget
        times = [point["wall_time_s"] for point in row["curve"]]
        assert times == sorted(times) and times[0] > 0
        assert row["wall_time_s"] == (times[row["kept_round"]] if row["reached"] else times[-1])
    assert "| CartPole-v1 | tfkd teacher-driven |" in stdout


@pytest.mark.slow
def test_peers_smoke(tmp_path):
    # Builds imitation's venv (~/.cache/tfkd/peers-venv) on first use: minutes.
    out = tmp_path / "results"
    stdout = run_benchmark("peers.py", "--smoke", "--out", out, cwd=tmp_path)
    result = _strict_load(out / "peers" / "CartPole-v1.json")
    assert [e["method"] for e in result["summary"]["methods"]] == [
        "tfkd student-driven", "imitation DAgger", "tfkd teacher-driven", "imitation BC"]
    assert [(r["numerator"], r["denominator"]) for r in result["summary"]["ratios"]] == [
        ("tfkd student-driven", "imitation DAgger"), ("tfkd teacher-driven", "imitation DAgger"),
        ("tfkd teacher-driven", "imitation BC")]
    assert result["versions"]["imitation side"]["imitation"] == "1.0.1"
    for name in ("imitation-DAgger", "imitation-BC"):
        row = _strict_load(out / "peers" / "CartPole-v1" / "seed-0" / f"{name}.json")["row"]
        assert row["teacher_max_abs_q_difference"] < 1e-4  # the PyTorch copy of the teacher
        assert row["curve"] and len(row["peer_rounds"]) == len(row["curve"])
    assert "| CartPole-v1 | tfkd student-driven / imitation DAgger |" in stdout
