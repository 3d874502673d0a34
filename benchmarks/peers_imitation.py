"""The imitation side of ``benchmarks/peers.py``: DAgger and BC as imitation's users run them.

Runs in its own virtual environment (imitation 1.0.1, stable-baselines3,
PyTorch, gymnasium 0.29; ``benchmarks/peers.py`` builds it), never beside
tfkd: it imports neither TensorFlow nor tfkd.

- The teacher comes as plain arrays (``.npz``, no pickle): the Dense layers of
  tfkd's Keras Q-network, kernels ``[in, out]``. They are copied into the same
  PyTorch MLP (Linear + ReLU, linear output) behind a stable-baselines3
  ``BasePolicy`` whose action is ``argmax Q``; the file's probe observations
  and the Keras Q-values on them check the copy before anything runs.
- The student is a stable-baselines3 ``ActorCriticPolicy`` with the hidden
  sizes of tfkd's student (``net_arch=dict(pi=units, vf=[])``, ReLU), trained
  by ``imitation.algorithms.bc.BC`` (Adam, the given batch size and learning
  rate, imitation's default entropy weight).
- ``dagger``: ``SimpleDAggerTrainer.train`` one round at a time (β = decay^round,
  ``ExponentialBetaSchedule``), each round at least ``steps_per_round`` env
  steps in whole episodes (imitation's rule), then ``train_steps_per_round``
  BC batches on everything collected, until the env-step budget is spent.
- ``bc``: ``imitation.data.rollout.rollout`` of the teacher for at least the
  budget's env steps (whole episodes), then BC on those transitions,
  ``train_steps_per_round`` batches per round, as many rounds as tfkd's run has.

After each round the clock stops, the student's weights are written as plain
arrays and the parent is told on stdout (a line ``@@peers {json}``); it
evaluates them with tfkd's own evaluation and answers ``continue`` or
``stop`` on stdin. ``wall_time_s`` in each message is the training time so
far, the time spent exporting and waiting left out. Env steps are counted
at the vector env (``num_envs`` per step), so steps that imitation discards
(the unfinished episodes at the end of a round) count too.

Usage (by ``benchmarks/peers.py``)::

    <peer venv>/bin/python benchmarks/peers_imitation.py config.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common import policies
from stable_baselines3.common.vec_env import VecEnvWrapper

from imitation.algorithms import bc
from imitation.algorithms.dagger import ExponentialBetaSchedule, SimpleDAggerTrainer
from imitation.data import rollout
from imitation.data.wrappers import RolloutInfoWrapper
from imitation.util import logger as imitation_logger
from imitation.util.util import make_vec_env

MARK = "@@peers "


def tell(event: str, **values) -> None:
    """One protocol line to the parent."""
    print(MARK + json.dumps({"event": event, **values}), flush=True)


def hear() -> str:
    line = sys.stdin.readline()
    if not line:
        sys.exit("the parent closed the protocol pipe")
    return line.strip()


# --------------------------------------------------------------- networks


def load_layers(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as arrays:
        count = sum(1 for name in arrays.files if name.startswith("kernel_"))
        return [(arrays[f"kernel_{i}"], arrays[f"bias_{i}"]) for i in range(count)]


def mlp_from_layers(layers) -> th.nn.Sequential:
    """Linear + ReLU per hidden layer, a linear output: tfkd's ``build_mlp`` in PyTorch."""
    modules: list[th.nn.Module] = []
    for i, (kernel, bias) in enumerate(layers):
        linear = th.nn.Linear(*kernel.shape)
        with th.no_grad():
            linear.weight.copy_(th.as_tensor(kernel.T))
            linear.bias.copy_(th.as_tensor(bias))
        modules.append(linear)
        if i < len(layers) - 1:
            modules.append(th.nn.ReLU())
    return th.nn.Sequential(*modules)


class QNetworkExpert(policies.BasePolicy):
    """The teacher as a stable-baselines3 policy: the greedy action of its Q-network."""

    def __init__(self, observation_space, action_space, q_network: th.nn.Module):
        super().__init__(observation_space, action_space)
        self.q_network = q_network

    def _predict(self, observation, deterministic: bool = True) -> th.Tensor:
        return self.q_network(observation.float()).argmax(dim=1)


def student_layers(policy: policies.ActorCriticPolicy) -> list[tuple[np.ndarray, np.ndarray]]:
    """The student's policy MLP (``mlp_extractor.policy_net`` then ``action_net``) as arrays."""
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, th.nn.Linear)]
    linears.append(policy.action_net)
    return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
            for m in linears]


def student_logits(policy: policies.ActorCriticPolicy, observations: np.ndarray) -> np.ndarray:
    with th.no_grad():
        features = policy.extract_features(th.as_tensor(observations), policy.pi_features_extractor)
        return policy.action_net(policy.mlp_extractor.forward_actor(features)).numpy()


def save_student(policy, path: str, probe: np.ndarray) -> None:
    arrays = {}
    for i, (kernel, bias) in enumerate(student_layers(policy)):
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel, bias
    np.savez(path, probe_observations=probe, probe_outputs=student_logits(policy, probe), **arrays)


# ---------------------------------------------------------------- env steps


class StepCounter(VecEnvWrapper):
    """Counts the env steps taken: ``num_envs`` per vector step, every one of them."""

    def __init__(self, venv):
        super().__init__(venv)
        self.steps = 0

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        result = self.venv.step_wait()
        self.steps += self.num_envs
        return result


class Clock:
    """Training wall time: stopped while the parent evaluates."""

    def __init__(self):
        self.started, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def report_round(self, round_index, env_steps, policy, work, probe, **extra) -> bool:
        """Stops the clock, hands the round to the parent; True if it says stop."""
        seconds, stopped_at = self.elapsed(), time.perf_counter()
        path = os.path.join(work, f"round-{round_index:03d}.npz")
        save_student(policy, path, probe)
        tell("round", round=round_index, env_steps=int(env_steps), wall_time_s=seconds,
             weights=path, **extra)
        answer = hear()
        self.paused += time.perf_counter() - stopped_at
        return answer == "stop"


# --------------------------------------------------------------------- runs


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        config = json.load(file)
    th.set_num_threads(config["threads"])
    th.set_num_interop_threads(config["threads"])
    seed = config["seed"]
    rng = np.random.default_rng(seed)
    th.manual_seed(seed)
    work = config["work_dir"]

    with np.load(config["teacher"], allow_pickle=False) as arrays:
        probe = arrays["probe_observations"].astype(np.float32)
        keras_q = arrays["probe_outputs"]
    q_network = mlp_from_layers(load_layers(config["teacher"]))
    with th.no_grad():
        torch_q = q_network(th.as_tensor(probe)).numpy()
    if not (np.allclose(torch_q, keras_q, atol=1e-4, rtol=1e-4)
            and np.array_equal(torch_q.argmax(1), keras_q.argmax(1))):
        sys.exit(f"the PyTorch copy of the teacher differs from the Keras one: max |ΔQ| = "
                 f"{np.abs(torch_q - keras_q).max():.3g}")
    import imitation
    import stable_baselines3
    tell("ready", versions={
        "imitation": imitation.__version__, "stable_baselines3": stable_baselines3.__version__,
        "torch": th.__version__, "gymnasium": gym.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0]}, teacher_max_abs_q_difference=float(
            np.abs(torch_q - keras_q).max()))

    # First use of autograd and Adam, as the parent's untimed warm-up does for TensorFlow.
    warm = th.nn.Linear(2, 2)
    optimizer = th.optim.Adam(warm.parameters())
    warm(th.zeros(1, 2)).sum().backward()
    optimizer.step()

    clock = Clock()  # from here on: the run, as a user's script would time it
    venv = StepCounter(make_vec_env(
        config["env_id"], rng=rng, n_envs=config["num_envs"],
        post_wrappers=[lambda env, _: RolloutInfoWrapper(env)]))
    expert = QNetworkExpert(venv.observation_space, venv.action_space, q_network)
    student = policies.ActorCriticPolicy(
        venv.observation_space, venv.action_space, lr_schedule=lambda _: th.finfo(th.float32).max,
        net_arch=dict(pi=list(config["student_units"]), vf=[]), activation_fn=th.nn.ReLU)
    quiet = imitation_logger.configure(os.path.join(work, "log"), ["csv"])
    trainer = bc.BC(
        observation_space=venv.observation_space, action_space=venv.action_space, rng=rng,
        policy=student, batch_size=config["batch_size"],
        optimizer_kwargs={"lr": config["learning_rate"]}, device="cpu", custom_logger=quiet)
    train_kwargs = dict(n_batches=config["train_steps_per_round"], log_rollouts_venv=None,
                        progress_bar=False)
    budget = config["total_env_steps"]

    if config["method"] == "dagger":
        with tempfile.TemporaryDirectory(prefix="dagger-", dir=work) as scratch:
            dagger = SimpleDAggerTrainer(
                venv=venv, scratch_dir=scratch, expert_policy=expert, bc_trainer=trainer,
                rng=rng, beta_schedule=ExponentialBetaSchedule(config["beta_decay"]),
                custom_logger=quiet)
            round_index = 0
            while venv.steps < budget:
                # One round of SimpleDAggerTrainer.train: collect, aggregate, BC.
                dagger.train(1, rollout_round_min_episodes=1,
                             rollout_round_min_timesteps=config["steps_per_round"],
                             bc_train_kwargs=train_kwargs)
                dataset = sum(len(trajectory) for trajectory in dagger._all_demos)
                if clock.report_round(round_index, venv.steps, trainer.policy, work, probe,
                                      dataset_transitions=dataset,
                                      beta=dagger.beta_schedule(round_index)):
                    break
                round_index += 1
    elif config["method"] == "bc":
        trajectories = rollout.rollout(
            expert, venv, rollout.make_sample_until(min_timesteps=budget, min_episodes=1),
            rng=rng)
        transitions = rollout.flatten_trajectories(trajectories)
        trainer.set_demonstrations(transitions)
        for round_index in range(config["rounds"]):
            trainer.train(**train_kwargs)
            if clock.report_round(round_index, venv.steps, trainer.policy, work, probe,
                                  dataset_transitions=len(transitions)):
                break
    else:
        sys.exit(f"unknown method {config['method']!r}")
    tell("done", wall_time_s=clock.elapsed(), env_steps=int(venv.steps))


if __name__ == "__main__":
    main()
