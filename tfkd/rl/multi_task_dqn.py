"""Multi-task DQN from scratch: the baseline that multi-task distillation must beat.

Rusu et al. 2016, "Policy Distillation", §4 compare their multi-task student
with a multi-task DQN: one network, trained by reinforcement learning alone
on every task at once. :func:`train_multi_task_dqn` trains such a network,
of the kind ``tfkd.models.build_multi_task_student`` builds (an input adapter
per task, a shared trunk, a head per task), by the double DQN of
:mod:`tfkd.rl.dqn` — its replay memory, TD targets and loss, ε schedule,
target updates and evaluations.

Each task k has its own vector env, replay memory, ε schedule and env-step
budget. Env steps interleave round-robin: every task's vector env steps once
in turn, so all tasks have taken the same number of env steps, until a task
has spent its budget (``total_env_steps`` may differ between tasks): from
then on only the others step, and its replay memory, full, is still
sampled by every gradient step, as a multi-task student keeps training on
a task whose budget is spent. Each gradient
step samples a minibatch B_k from each task's replay memory and minimises

    L = Σ_k L_TD,k(B_k),   L_TD,k = mean over B_k of Huber(y − Q_k(s, a))

through the shared trunk, y the double-DQN target of task k's head of the
target network (one copy of the whole multi-task network), with one Adam
optimizer. The sum, not the mean: task k's adapter and head get the gradient
its own DQN would give them. ``train_every`` and ``gradient_steps`` count env
steps per task, so each task's replay memory is sampled as often as in its
own :func:`~tfkd.rl.dqn.train_dqn` run on the same budget.

One :class:`~tfkd.rl.dqn.DQNConfig` per task. The settings of the shared
network, optimizer and schedule (:data:`SHARED_SETTINGS`) must agree across
tasks; the others (:data:`TASK_SETTINGS`) may differ. Not supported here:
callbacks, TensorBoard and ``target_return``.

With a ``checkpoint_dir``, every evaluation writes a checkpoint (the network,
its target copy, the optimizer, the kept weights, each task's replay memory,
random state and history), atomically, as :func:`~tfkd.rl.dqn.train_dqn`
does; a run given a folder with a checkpoint resumes from it, each task's
envs starting new episodes, and a larger budget continues a finished run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfkd import files
from tfkd.models import task_model, task_names
from tfkd.rl import evaluation, teacher_io
from tfkd.rl.dqn import (
    DQNConfig,
    DQNHistory,
    Explorer,
    Replay,
    TrainingReporter,
    batch_signature,
    network_td_targets,
    restore_optimizer,
    save_optimizer,
    td_loss,
    update_target,
)
from tfkd.rl.envs import env_spec, make_vector_env
from tfkd.rl.policies import GreedyPolicy, network_outputs
from tfkd.rl.seeding import derived_seed

# DQNConfig fields every task's config must share: one network, one optimizer,
# one target network, one schedule of updates and evaluations.
SHARED_SETTINGS = ("num_envs", "learning_rate", "max_grad_norm",
                   "learning_starts", "train_every", "gradient_steps", "target_update_every",
                   "target_update_tau", "eval_every", "eval_episodes", "keep_best", "seed",
                   "checkpoint_dir", "progress")
# ... and those each task has its own of (hidden_units is not used: the network is given).
TASK_SETTINGS = ("env_id", "total_env_steps", "buffer_capacity", "batch_size", "gamma", "double_q",
                 "epsilon_initial", "epsilon_final", "epsilon_fraction")
CHECKPOINT_FORMAT = "tfkd.rl.multi_task_dqn.checkpoint/1"


@dataclass
class MultiTaskDQNHistory:
    """A multi-task DQN run: each task's :class:`~tfkd.rl.dqn.DQNHistory` and the selection.

    ``as_dict`` is strict JSON (a missing value is null).

    Attributes:
        tasks: ``{env_id: DQNHistory}`` in the network's task order: the task's
            training episodes, evaluations (return, its std, the mean TD loss
            since the previous evaluation, ε), selection seeds and env steps.
            ``best_step`` is the best evaluation's env step (the same for
            every task) and ``best_return`` this task's return there.
        eval_steps: env steps of each evaluation (those of the tasks with the
            largest budget; each task's history has its own).
        selection_score: per evaluation, the score the kept weights are
            chosen on (:func:`selection_score`; None where undefined).
        reference_returns: per task, the return that scores 1, or None
            (selection on the mean return).
        random_returns: per task, the uniform-random policy's mean return on
            the selection episodes (None without ``reference_returns``).
        best_score, best_step: the best evaluation (None: none ran).
        wall_time_s: training time, evaluations included.
    """

    tasks: dict[str, DQNHistory]
    eval_steps: list[int] = field(default_factory=list)
    selection_score: list[float | None] = field(default_factory=list)
    reference_returns: dict[str, float] | None = None
    random_returns: dict[str, float] | None = None
    best_score: float | None = None
    best_step: int | None = None
    wall_time_s: float = 0.0

    def as_dict(self) -> dict:
        return files.strict_json({
            "tasks": {env_id: history.as_dict() for env_id, history in self.tasks.items()},
            "eval_steps": self.eval_steps, "selection_score": self.selection_score,
            "reference_returns": self.reference_returns, "random_returns": self.random_returns,
            "best_score": self.best_score, "best_step": self.best_step,
            "wall_time_s": self.wall_time_s})


def selection_score(returns: Sequence[float], random_returns: Sequence[float] | None = None,
                    reference_returns: Sequence[float] | None = None) -> float | None:
    """The score a multi-task network is selected on: a mean over tasks.

    With references, the mean normalised score (0: random play, 1: the
    reference, e.g. the task's teacher), as ``distill_multi_task`` selects::

        score = (1/K) Σ_k (R_k − R_random,k) / (R_ref,k − R_random,k)

    so every task counts alike whatever its return scale; None if a task's
    score is undefined (its reference return equals random play's). Without
    references, the mean return ``(1/K) Σ_k R_k``, in which tasks with large
    returns weigh more.

    Args:
        returns: each task's mean return on its selection episodes.
        random_returns, reference_returns: each task's random and reference
            returns (both or neither).
    """
    if reference_returns is None:
        return float(np.mean(returns))
    scores = [evaluation.normalized_score(r, low, high)
              for r, low, high in zip(returns, random_returns, reference_returns)]
    return None if None in scores else float(np.mean(scores))


def train_multi_task_dqn(network: keras.Model, configs: Sequence[DQNConfig],
                         reference_returns: Mapping[str, float] | None = None
                         ) -> MultiTaskDQNHistory:
    """Trains a multi-task network in place by double DQN on all its tasks at once.

    See the module docstring for the loss and the round-robin schedule. Every
    ``eval_every`` env steps (per task) and at the end, each task's head plays
    greedily on ``selection_seeds(seed, eval_episodes)`` episodes of its env,
    never on held-out ones, and :func:`selection_score` combines the returns;
    with ``keep_best`` the network ends with the weights of the first
    evaluation with the highest score, otherwise (or if no score was
    defined) with the last weights.

    Args:
        network: a multi-task network whose tasks (``tfkd.models.task_names``)
            are the configs' env ids, in order, e.g. from
            ``tfkd.models.build_multi_task_student``.
        configs: one :class:`~tfkd.rl.dqn.DQNConfig` per task; they must agree
            on :data:`SHARED_SETTINGS`. Task 0 draws its random numbers as
            :func:`tfkd.rl.dqn.train_dqn` would, so a one-task run trains as
            ``train_dqn`` on the task's network does.
        reference_returns: ``{env_id: return}`` that scores 1 in the
            selection score (e.g. each task's teacher on the same selection
            episodes); the uniform-random policy's return there scores 0.
            None: select on the mean return over tasks.

    Returns:
        The run's history.

    Raises:
        ValueError: the configs disagree on a shared setting or ask for
            something not supported here, their env ids are not the network's
            tasks, ``reference_returns`` does not give every task a finite
            return, or ``checkpoint_dir`` holds a checkpoint this run cannot
            resume from (other settings, tasks or references; damaged).
        tfkd.rl.teacher_io.NonFiniteError: if the loss or the weights go NaN / inf.
    """
    configs = [configs] if isinstance(configs, DQNConfig) else list(configs)
    _check(network, configs, reference_returns)
    shared = configs[0]
    keras.utils.set_random_seed(shared.seed)
    envs = []
    try:
        for config in configs:
            envs.append(make_vector_env(config.env_id, config.num_envs))
        return _Run(network, configs, envs, reference_returns).train()
    finally:
        for env in envs:
            env.close()


def _check(network: keras.Model, configs: list[DQNConfig],
           reference_returns: Mapping[str, float] | None) -> None:
    if not configs or not all(isinstance(config, DQNConfig) for config in configs):
        raise ValueError("configs must be a list of one DQNConfig per task, at least one.")
    for config in configs:
        config.check()
    env_ids = [config.env_id for config in configs]
    if task_names(network) != env_ids:
        raise ValueError(f"the configs' env ids ({', '.join(env_ids)}) are not the network's "
                         f"tasks ({', '.join(task_names(network))}), in order.")
    differ = [name for name in SHARED_SETTINGS
              if any(getattr(config, name) != getattr(configs[0], name) for config in configs)]
    if differ:
        raise ValueError(f"the tasks' configs must agree on {', '.join(differ)} (one network, "
                         "optimizer and schedule for all tasks).")
    for config in configs:
        unsupported = [name for name, value in (
            ("tensorboard_dir", config.tensorboard_dir),
            ("callbacks", list(config.callbacks)), ("target_return", config.target_return))
            if value not in (None, [])]
        if config.n_step_update != 1:
            unsupported.append("n_step_update")
        if unsupported:
            raise ValueError(f"train_multi_task_dqn does not take {', '.join(unsupported)}: "
                             f"leave it at its default in {config.env_id}'s config.")
    if reference_returns is not None:
        if sorted(reference_returns) != sorted(env_ids):
            raise ValueError(f"reference_returns must give one return per task "
                             f"({', '.join(env_ids)}), got {', '.join(reference_returns)}.")
        for env_id, value in reference_returns.items():
            if not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ValueError(f"reference_returns[{env_id!r}] must be finite, got {value!r}.")


class _Task:
    """One task of a run: its view of the network, env side, replay memory and history."""

    def __init__(self, index: int, config: DQNConfig, env, network: keras.Model,
                 target_network: keras.Model, step: int = 0):
        self.config, self.env_id = config, config.env_id
        self.spec = env_spec(env, config.env_id)
        self.q_network = task_model(network, config.env_id)
        self.target_network = task_model(target_network, config.env_id)
        self.q_outputs = network_outputs(self.q_network, self.spec.num_actions)
        # Task 0 seeds as train_dqn does; the others get streams of their own.
        # A run resumed at ``step`` starts new episodes from seeds of that step.
        self.rng = np.random.default_rng(config.seed if index == 0 else [config.seed, index])
        reset_seed = derived_seed(config.seed, step, *([index] if index else []))
        self.replay = Replay(config.buffer_capacity, self.spec.observation_shape,
                             self.spec.observation_dtype, self.rng)
        self.seeds = evaluation.selection_seeds(config.seed, config.eval_episodes)
        self.history = DQNHistory(selection_seeds=list(self.seeds))
        self.explorer = Explorer(env, config, self.q_outputs, self.replay, self.rng,
                                 self.history, reset_seed)
        self.losses = TrainingReporter(config)  # the TD losses since the last evaluation
        self.env_steps = 0

    def sample(self) -> tuple[tf.Tensor, ...]:
        return tuple(map(tf.constant, self.replay.sample(self.config.batch_size)))

    def evaluate(self) -> evaluation.ReturnStats:
        return evaluation.evaluate_policy(self.env_id, GreedyPolicy(self.q_outputs), self.seeds)


class _Run:
    """The loop of :func:`train_multi_task_dqn`."""

    def __init__(self, network, configs, envs, reference_returns):
        self.network, self.config = network, configs[0]  # configs[0]: the shared settings
        self.configs = configs
        self.target_network = keras.models.clone_model(network)
        self.target_network.set_weights(network.get_weights())
        checkpoint = (self.config.checkpoint_dir
                      and files.latest_checkpoint(self.config.checkpoint_dir))
        saved = _read_state(checkpoint) if checkpoint else None
        self.tasks = [_Task(k, config, env, network, self.target_network,
                            saved["step"] if saved else 0)
                      for k, (config, env) in enumerate(zip(configs, envs))]
        self.optimizer = keras.optimizers.Adam(self.config.learning_rate,
                                               global_clipnorm=self.config.max_grad_norm)
        self.optimizer.build(network.trainable_variables)
        self.update = _make_multi_task_update(network, self.tasks, self.optimizer)
        self.history = MultiTaskDQNHistory({task.env_id: task.history for task in self.tasks})
        if reference_returns is not None:
            self._set_references(reference_returns)
        self.step, self.last_checked, self.best_weights = 0, None, None
        self.next_train, self.next_target = self.config.learning_starts, 0
        self.next_eval = self.config.eval_every or None
        self.wall_time_s = 0.0
        if saved:
            self._restore(checkpoint, saved)

    def _set_references(self, reference_returns: Mapping[str, float]) -> None:
        if not self.config.eval_episodes:
            return  # no evaluations, nothing to select
        randoms = {task.env_id: evaluation.evaluate_policy(
            task.env_id, evaluation.random_policy(task.spec.num_actions), task.seeds).mean
            for task in self.tasks}
        self.history.reference_returns = {task.env_id: float(reference_returns[task.env_id])
                                          for task in self.tasks}
        self.history.random_returns = randoms

    def train(self) -> MultiTaskDQNHistory:
        config = self.config
        self.start = time.perf_counter() - self.wall_time_s
        budget = max(task.config.total_env_steps for task in self.tasks)
        bar = tqdm(total=budget, initial=min(self.step, budget),
                   desc=f"multi-task DQN ({len(self.tasks)} tasks)", disable=not config.progress)
        try:
            while self.step < budget:
                for task in self.tasks:
                    if task.env_steps < task.config.total_env_steps:
                        task.env_steps = task.explorer.step(task.env_steps)
                self.step += config.num_envs
                while self.step >= self.next_train:
                    self.next_train += config.train_every
                    for _ in range(config.gradient_steps):
                        losses = self.update([task.sample() for task in self.tasks])
                        for task, loss in zip(self.tasks, losses.numpy()):
                            task.losses.add_loss(float(loss))
                if self.step >= self.next_target:
                    self.next_target += config.target_update_every
                    update_target(self.network, self.target_network, config.target_update_tau)
                if self.next_eval is not None and self.step >= self.next_eval:
                    self.next_eval += config.eval_every
                    self._evaluate()
                bar.update(config.num_envs)
                self._show(bar)
            if self.last_checked != self.step:
                self._evaluate()
            if config.keep_best and self.best_weights is not None:
                self.network.set_weights(self.best_weights)
        finally:
            bar.close()
        self.history.wall_time_s = time.perf_counter() - self.start
        for task in self.tasks:
            task.history.env_steps, task.history.wall_time_s = (
                task.env_steps, self.history.wall_time_s)
        return self.history

    def _evaluate(self) -> None:
        """Evaluates every task, keeps the best weights, writes a checkpoint."""
        teacher_io.check_finite(self.network.get_weights(),
                                f"the multi-task network at env step {self.step}")
        self.last_checked = self.step
        if self.config.eval_episodes:
            self._select()
        self.wall_time_s = time.perf_counter() - self.start
        if self.config.checkpoint_dir:
            self._save_checkpoint()

    def _select(self) -> None:
        """Plays each task's selection episodes; keeps the weights of the best score."""
        returns = []
        for task in self.tasks:
            stats = task.evaluate()
            task.history.append_evaluation(task.env_steps, stats, task.losses.take_mean_loss(),
                                           task.explorer.explore.epsilon)
            returns.append(stats.mean)
        history = self.history
        if history.reference_returns is None:
            score = selection_score(returns)
        else:
            score = selection_score(returns, list(history.random_returns.values()),
                                    list(history.reference_returns.values()))
        history.eval_steps.append(self.step)
        history.selection_score.append(score)
        if score is not None and (history.best_score is None or score > history.best_score):
            history.best_score, history.best_step = score, self.step
            self.best_weights = self.network.get_weights()
            for task, value in zip(self.tasks, returns):
                task.history.best_return, task.history.best_step = float(value), self.step

    # ------------------------------------------------------------- checkpoints

    def _save_checkpoint(self) -> None:
        history = self.history

        def write(folder):
            self.network.save_weights(os.path.join(folder, "network.weights.h5"))
            self.target_network.save_weights(os.path.join(folder, "target_network.weights.h5"))
            save_optimizer(os.path.join(folder, "optimizer.npz"), self.optimizer)
            files.write_npz(os.path.join(folder, "best_weights.npz"), *(self.best_weights or []))
            for k, task in enumerate(self.tasks):
                task.replay.save(os.path.join(folder, f"replay-{k}.npz"))
            files.write_json(os.path.join(folder, "state.json"), {
                "format": CHECKPOINT_FORMAT, "step": self.step, "next_train": self.next_train,
                "next_target": self.next_target, "next_eval": self.next_eval,
                "has_best_weights": self.best_weights is not None,
                "wall_time_s": self.wall_time_s,
                "configs": [config.as_dict() for config in self.configs],
                "tasks": [{"env_steps": task.env_steps, "rng": task.rng.bit_generator.state,
                           "history": task.history.as_dict()} for task in self.tasks],
                "eval_steps": history.eval_steps, "selection_score": history.selection_score,
                "reference_returns": history.reference_returns,
                "random_returns": history.random_returns, "best_score": history.best_score,
                "best_step": history.best_step})

        files.save_checkpoint(self.config.checkpoint_dir, f"ckpt-{self.step}", write, "ckpt-",
                              step=self.step)

    def _restore(self, folder: str, saved: dict) -> None:
        history = self.history
        try:
            if len(saved["configs"]) != len(self.configs):
                raise ValueError(f"it holds {len(saved['configs'])} tasks, this run "
                                 f"{len(self.configs)}")
            for config, theirs in zip(self.configs, saved["configs"]):
                config.check_resumable(theirs)
            if saved["reference_returns"] != history.reference_returns:
                raise ValueError("it was written by a run with other reference_returns "
                                 f"({saved['reference_returns']})")
            self.network.load_weights(os.path.join(folder, "network.weights.h5"))
            self.target_network.load_weights(os.path.join(folder, "target_network.weights.h5"))
            restore_optimizer(os.path.join(folder, "optimizer.npz"), self.optimizer)
            best = files.read_array_list(os.path.join(folder, "best_weights.npz"))
            for k, (task, state) in enumerate(zip(self.tasks, saved["tasks"])):
                task.replay.load(os.path.join(folder, f"replay-{k}.npz"))
                task.rng.bit_generator.state = state["rng"]
                task.env_steps = state["env_steps"]
                task.history = history.tasks[task.env_id] = task.explorer.history = (
                    DQNHistory.from_dict(state["history"]))
            self.step = self.last_checked = saved["step"]
            self.next_train, self.next_target = saved["next_train"], saved["next_target"]
            self.next_eval, self.wall_time_s = saved["next_eval"], saved["wall_time_s"]
            self.best_weights = best if saved["has_best_weights"] else None
            history.eval_steps, history.selection_score = (saved["eval_steps"],
                                                           saved["selection_score"])
            history.random_returns = saved["random_returns"]
            history.best_score, history.best_step = saved["best_score"], saved["best_step"]
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"Cannot resume from checkpoint {folder!r}: {error}. Delete it or "
                             "pass another checkpoint_dir.") from None

    def _show(self, bar) -> None:
        if all(task.history.episode_returns for task in self.tasks):
            recent = "/".join(f"{np.mean(task.history.episode_returns[-20:]):.0f}"
                              for task in self.tasks)
            best = self.history.best_score
            bar.set_postfix(eps=f"{self.tasks[0].explorer.explore.epsilon:.2f}", ret=recent,
                            best="-" if best is None else f"{best:.2f}")


def _read_state(folder: str) -> dict:
    """A checkpoint's ``state.json``."""
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as file:
            saved = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot resume from checkpoint {folder!r}: {error}. Delete it or "
                         "pass another checkpoint_dir.") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"Cannot resume from checkpoint {folder!r}: it is not a multi-task "
                         "DQN checkpoint. Delete it or pass another checkpoint_dir.")
    return saved


def _make_multi_task_update(network: keras.Model, tasks: Sequence[_Task], optimizer):
    """One gradient step on every task, compiled once: minimises ``Σ_k L_TD,k``.

    ``update([(s, a, r, s', terminated) per task])`` returns the ``[tasks]``
    TD losses; each is :func:`tfkd.rl.dqn.td_loss` of its task's head.
    """

    @tf.function(input_signature=[[batch_signature(task.spec) for task in tasks]])
    def update(batches):
        targets = [network_td_targets(task.q_network, task.target_network, rewards,
                                      next_observations, terminated, task.config.gamma,
                                      task.config.double_q)
                   for task, (_, _, rewards, next_observations, terminated)
                   in zip(tasks, batches)]
        with tf.GradientTape() as tape:
            losses = [td_loss(task.q_network(batch[0], training=True), batch[1], y)
                      for task, batch, y in zip(tasks, batches, targets)]
            loss = tf.add_n(losses)
        variables = network.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return tf.stack(losses)

    return update
