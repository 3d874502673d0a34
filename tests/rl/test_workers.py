"""Collection and labelling on Ray actors (tfkd.rl.workers), on a local two-actor cluster."""

import os
import pathlib

import numpy as np
import pytest

from tfkd.models import build_mlp
from tfkd.rl import (DistillConfig, distill, evaluate_policy, held_out_seeds, network_outputs,
                     seed_everything)
from tfkd.rl import workers

ray = pytest.importorskip("ray")


@pytest.mark.parametrize("steps, num_workers, num_envs, shares", [
    (96, 2, 8, [48, 48]),
    (104, 2, 8, [56, 48]),       # 13 vector steps: the first worker takes the extra one
    (8, 2, 8, [8, 0]),           # fewer vector steps than workers
    (103, 4, 8, [24, 24, 24, 24]),  # 12 whole vector steps; 7 steps left out
])
def test_each_worker_gets_whole_vector_steps_adding_up_to_the_round(
        steps, num_workers, num_envs, shares):
    got = workers.split_steps(steps, num_workers, num_envs)
    assert got == shares
    assert sum(got) == steps // num_envs * num_envs and all(s % num_envs == 0 for s in got)


def test_only_keras_models_travel_to_workers():
    with pytest.raises(ValueError, match="Keras 3 model"):
        workers.shippable(lambda observations: observations)


def test_distilling_on_two_ray_workers_balances_the_pole(cartpole_teacher):
    """The learner fits what two actors collected; tfkd starts and stops the cluster."""
    assert not ray.is_initialized()
    assert os.environ[workers.LOOPBACK_ONLY[0]] == workers.LOOPBACK_ONLY[1]  # tests/conftest.py
    seed_everything(0)  # the initial weights, whatever ran before in this process
    student = build_mlp((4,), 2, (16, 16))
    config = DistillConfig(env_id="CartPole-v1", control="teacher", total_env_steps=2_000,
                           steps_per_round=1_000, train_steps_per_round=300, eval_episodes=3,
                           num_envs=4, workers=2, progress=False)
    history = distill(cartpole_teacher, student, config)
    assert not ray.is_initialized()  # the run's own cluster is gone
    assert history.env_steps == [1_000, 2_000] and history.buffer_size == [1_000, 2_000]
    held_out = evaluate_policy("CartPole-v1", student, held_out_seeds(0, 10))
    teacher = evaluate_policy("CartPole-v1", cartpole_teacher, held_out_seeds(0, 10))
    assert teacher.mean == 500.0
    assert held_out.mean >= 450.0, held_out


def test_a_cluster_tfkd_starts_runs_its_actors_at_the_learners_priority():
    """Ray's default niceness of 15 starves the actors behind a busy learner."""
    with workers.ray_cluster(None, num_workers=1) as cluster:
        niceness = cluster.get(cluster.remote(lambda: os.nice(0)).remote())
    assert niceness == os.nice(0)


def test_labelling_on_workers_matches_labelling_here(cartpole_teacher):
    observations = np.random.default_rng(0).normal(size=(1_001, 4)).astype(np.float32)
    labels = workers.label_observations(cartpole_teacher, observations, num_workers=2,
                                        batch_size=128)
    assert labels.dtype == np.float32 and not ray.is_initialized()
    np.testing.assert_allclose(labels, network_outputs(cartpole_teacher)(observations),
                               rtol=1e-5, atol=1e-5)


def test_without_ray_workers_say_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'tfkd\[ray\]'"):
        workers.require_ray()


@pytest.mark.slow
def test_workers_join_a_running_cluster_and_leave_it_running(cartpole_teacher, tmp_path):
    """`ray start --head` on loopback, then a run with ray_address joins it."""
    import shutil
    import socket
    import subprocess
    import sys

    ray_cli = shutil.which("ray") or str(pathlib.Path(sys.executable).parent / "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "2",
                    "--include-dashboard", "false", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=120)
    try:
        student = build_mlp((4,), 2, (16, 16))
        config = DistillConfig(env_id="CartPole-v1", control="teacher", total_env_steps=1_000,
                               steps_per_round=500, train_steps_per_round=200, eval_episodes=0,
                               num_envs=4, workers=2, ray_address=address, progress=False)
        history = distill(cartpole_teacher, student, config)
        assert history.env_steps == [500, 1_000]
        status = subprocess.run([ray_cli, "status", "--address", address], capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr  # the cluster outlives the run
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)
