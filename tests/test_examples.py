"""Each example, run as a script on a tiny budget (``TFKD_EXAMPLE_TINY=1``)."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def run_example(name, tmp_path, *args):
    env = dict(os.environ, TFKD_EXAMPLE_TINY="1", TF_CPP_MIN_LOG_LEVEL="3",
               SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg")
    env.pop("TF_USE_LEGACY_KERAS", None)  # Each example sets what it needs itself.
    run = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run.stdout


def test_cartpole_tf_agents(tmp_path):
    out = run_example("cartpole_tf_agents.py", tmp_path)
    assert "student as a TF-Agents policy" in out and "agreeing on" in out


def test_lunar_lander(tmp_path):
    pytest.importorskip("Box2D")
    out = run_example("lunar_lander.py", tmp_path, "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert "student:" in out and (tmp_path / "ckpt" / "latest.json").is_file()


def test_offline_npz(tmp_path):
    dataset = tmp_path / "teacher.npz"
    out = run_example("offline_npz.py", tmp_path, "--dataset", str(dataset))
    assert dataset.is_file() and "student (" in out
    # A second run reuses the saved dataset instead of training a teacher.
    assert "saved" not in run_example("offline_npz.py", tmp_path, "--dataset", str(dataset))


def test_keras_distiller(tmp_path):
    out = run_example("keras_distiller.py", tmp_path)
    assert "student:" in out


def test_atari_pong_few_steps(tmp_path):
    pytest.importorskip("ale_py")
    out = run_example("atari_pong.py", tmp_path)
    assert "teacher:" in out and "student:" in out
