"""Train a DQN teacher with TF-Agents' ``DqnAgent``, checkpoint it, save it.

The pieces are TF-Agents' own: a ``QNetwork`` (an MLP, or the Nature CNN for
Atari), a ``DqnAgent`` (or ``DdqnAgent``) with a target network and
epsilon-greedy exploration, a ``TFUniformReplayBuffer`` filled by a
``DynamicStepDriver``. The settings are :class:`tfkd.rl.dqn.DQNConfig`, the
same as the Keras DQN's; selection, checkpoints, callbacks and the saved
teacher folder follow :func:`tfkd.rl.dqn.train_dqn`:

* each evaluation runs the greedy Q-network on
  ``selection_seeds(config.seed, config.eval_episodes)`` episodes with
  ``tfkd.rl.evaluation.evaluate_policy``; the best weights are kept;
* ``checkpoint_dir/ckpt-<step>/`` holds the agent (networks, optimizer, step
  counter), the replay buffer, the env step, the best weights and the
  history; ``latest.json`` names the newest; a run given the folder resumes;
* the teacher folder (:mod:`tfkd.rl.teacher_io`) holds ``teacher.json``,
  ``q_network.*`` (a ``tf.train.Checkpoint`` of the Q-network) and
  ``policy/`` (the greedy policy as a ``PolicySaver`` SavedModel).

Determinism: ``seed`` fixes Python, NumPy and TensorFlow's global seed
(network initialisation, TF-Agents' ε and replay sampling ops, which take
their op seeds from it) and the env resets, so the same config twice gives
the same weights and history (tested in one process). TF-Agents' random ops
keep no generator state a checkpoint could hold, so a resumed run continues
from fresh op seeds rather than where it stopped. Training-episode returns
are not recorded (the driver runs inside a ``tf.function``).

References:
  Mnih et al. 2015, "Human-level control through deep reinforcement
  learning", Nature 518. Guadarrama et al. 2018, "TF-Agents".
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.drivers import dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.networks import q_network
from tf_agents.policies import policy_saver, random_tf_policy
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.specs import tensor_spec
from tf_agents.utils import common
from tqdm.auto import tqdm

from tfkd.agents.environment import GymnasiumEnvironment
from tfkd.agents.teachers import QNetworkTeacher
from tfkd.models import count_params
from tfkd import files
from tfkd.rl import evaluation, teacher_io
from tfkd.rl.dqn import DQNConfig, DQNHistory, TrainingReporter
from tfkd.rl.envs import is_atari, make_atari_env, make_env
from tfkd.rl.seeding import derived_seed

__all__ = ["TrainedDqnTeacher", "build_q_network", "load_dqn_teacher", "make_tf_agents_env",
           "save_dqn_teacher", "train_dqn_teacher"]

Q_NETWORK_PREFIX = "q_network"
POLICY_DIR = "policy"
NATURE_CNN_CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


@dataclass
class TrainedDqnTeacher:
    """A trained DQN teacher.

    Attributes:
      agent: the TF-Agents ``DqnAgent``.
      teacher: its Q-network as a tfkd teacher (``observations -> Q-values``).
      env_id: the gymnasium id it was trained on.
      history: the evaluations and training episodes (:class:`tfkd.rl.dqn.DQNHistory`).
      seconds: wall time of training (this process's part of it).
      replay_buffer: the ``TFUniformReplayBuffer`` it trained from (see
        :func:`tfkd.agents.replay_buffer_dataset`).
    """

    agent: dqn_agent.DqnAgent
    teacher: QNetworkTeacher
    env_id: str
    history: DQNHistory
    replay_buffer: Any = None
    seconds: float = 0.0

    @property
    def best_return(self) -> float | None:
        """The best mean evaluation return (its weights are the teacher's with keep_best)."""
        return self.history.best_return


def make_tf_agents_env(env_id: str, seed: int | None = None) -> GymnasiumEnvironment:
    """A gymnasium environment as a TF-Agents ``PyEnvironment``.

    ``ALE/...`` ids get the DQN frame preprocessing (84×84×4 uint8,
    ``tfkd.rl.envs.make_atari_env``); other ids must have vector observations.
    """
    if is_atari(env_id):
        return GymnasiumEnvironment(make_atari_env(env_id), seed=seed, allow_images=True)
    return GymnasiumEnvironment(make_env(env_id), seed=seed)


def build_q_network(observation_spec, action_spec,
                    hidden_units: Sequence[int]) -> q_network.QNetwork:
    """A TF-Agents ``QNetwork``: an MLP, or the Nature CNN for image observations."""
    if len(observation_spec.shape) == 3:  # Atari frames, uint8 in [0, 255].
        # TF-Agents 0.19 samples a random input to build the network and computes
        # maximum + 1 in uint8, which wraps to 0 under NumPy 2: declare [0, 254] there.
        observation_spec = tensor_spec.BoundedTensorSpec(
            observation_spec.shape, observation_spec.dtype, minimum=0, maximum=254,
            name=observation_spec.name)
        return q_network.QNetwork(
            observation_spec, action_spec,
            preprocessing_layers=tf.keras.layers.Rescaling(1.0 / 255),
            conv_layer_params=NATURE_CNN_CONV_LAYERS,
            fc_layer_params=tuple(hidden_units))
    return q_network.QNetwork(observation_spec, action_spec, fc_layer_params=tuple(hidden_units))


def _epsilon_schedule(env_step: tf.Variable, config: DQNConfig) -> Callable[[], tf.Tensor]:
    """:meth:`DQNConfig.epsilon` on the env-step counter, as TF-Agents wants it."""
    decay_steps = max(1.0, config.epsilon_fraction * config.total_env_steps)

    def epsilon() -> tf.Tensor:
        fraction = tf.minimum(1.0, tf.cast(env_step, tf.float32) / decay_steps)
        return config.epsilon_initial + fraction * (config.epsilon_final - config.epsilon_initial)
    return epsilon


def _make_agent(tf_env, config: DQNConfig, env_step: tf.Variable) -> dqn_agent.DqnAgent:
    observation_spec = tensor_spec.from_spec(tf_env.observation_spec())
    action_spec = tensor_spec.from_spec(tf_env.action_spec())
    agent_class = dqn_agent.DdqnAgent if config.double_q else dqn_agent.DqnAgent
    # TF-Agents counts target updates in gradient steps; the config in env steps.
    target_update_period = max(1, round(
        config.target_update_every * config.gradient_steps / config.train_every))
    agent = agent_class(
        tf_env.time_step_spec(), action_spec,
        q_network=build_q_network(observation_spec, action_spec, config.hidden_units),
        optimizer=tf.keras.optimizers.Adam(learning_rate=config.learning_rate),
        epsilon_greedy=_epsilon_schedule(env_step, config),
        n_step_update=config.n_step_update,
        target_update_period=target_update_period,
        target_update_tau=config.target_update_tau,
        td_errors_loss_fn=common.element_wise_huber_loss,
        gamma=config.gamma,
        gradient_clipping=config.max_grad_norm)
    agent.initialize()
    return agent


def train_dqn_teacher(config: DQNConfig | None = None,
                      out_dir: str | None = None) -> TrainedDqnTeacher:
    """Trains a DQN teacher with TF-Agents and optionally saves it.

    First ``learning_starts`` env steps of uniformly random play fill the
    replay buffer. Then each round collects ``train_every`` transitions with
    the ε-greedy policy and takes ``gradient_steps`` updates on uniform replay
    batches — one compiled ``tf.function`` per round. Every ``eval_every`` env
    steps (and at the end) the greedy Q-network is evaluated on the selection
    episodes; with ``keep_best`` the best weights are kept and saved, and
    training stops early once ``target_return`` is reached.

    Args:
      config: the settings (:class:`tfkd.rl.dqn.DQNConfig`; ``num_envs`` is
        not used: TF-Agents steps one env).
      out_dir: where to save the teacher (see module docstring); None: don't.

    Returns:
      A :class:`TrainedDqnTeacher`.

    Raises:
      ValueError: for a bad config, an unsupported environment or a checkpoint
        that does not fit this run.
      tfkd.rl.teacher_io.NonFiniteError: if the loss or the weights go NaN / inf.
    """
    config = config or DQNConfig()
    config.check()
    files.check_directory(out_dir, "out_dir")
    keras.utils.set_random_seed(config.seed)
    start_time = time.perf_counter()
    # Training episodes start from a hashed seed, not from the small integers
    # that seed the selection and held-out episodes, so they do not replay them.
    tf_env = tf_py_environment.TFPyEnvironment(
        make_tf_agents_env(config.env_id, seed=derived_seed(config.seed, 0)))
    env_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_step")
    agent = _make_agent(tf_env, config, env_step)
    network = agent._q_network
    replay_buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        agent.collect_data_spec, batch_size=tf_env.batch_size,
        max_length=config.buffer_capacity)
    collect_driver = dynamic_step_driver.DynamicStepDriver(
        tf_env, agent.collect_policy, observers=[replay_buffer.add_batch],
        num_steps=config.train_every)
    checkpoint = tf.train.Checkpoint(agent=agent, policy=agent.policy,
                                     replay_buffer=replay_buffer, env_step=env_step)
    seeds = evaluation.selection_seeds(config.seed, config.eval_episodes)
    history, best_weights = DQNHistory(selection_seeds=list(seeds)), None
    folder = config.checkpoint_dir and files.latest_checkpoint(config.checkpoint_dir)
    if folder:
        history, best_weights = _restore(folder, config, checkpoint)
    earlier_seconds = history.wall_time_s

    if int(env_step.numpy()) == 0 and config.learning_starts > 0:
        random_policy = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(),
                                                        tf_env.action_spec())
        dynamic_step_driver.DynamicStepDriver(
            tf_env, random_policy, observers=[replay_buffer.add_batch],
            num_steps=config.learning_starts).run()
        env_step.assign(config.learning_starts)

    @common.function(autograph=True)
    def train_round(time_step):
        """``train_every`` ε-greedy env steps, then ``gradient_steps`` updates; the mean loss."""
        time_step, _ = collect_driver.run(time_step)
        env_step.assign_add(config.train_every)
        total = tf.constant(0.0)
        for _ in tf.range(config.gradient_steps):
            experience, _ = replay_buffer.get_next(sample_batch_size=config.batch_size,
                                                   num_steps=config.n_step_update + 1)
            total += agent.train(experience).loss
        return time_step, total / config.gradient_steps

    teacher = QNetworkTeacher(network, config.env_id)
    reporter = TrainingReporter(config)
    step = int(env_step.numpy())
    last_checked = step if folder else None

    def evaluate():
        nonlocal best_weights, last_checked
        teacher_io.check_finite(network.get_weights(), f"the Q-network at env step {step}")
        last_checked = step
        if config.eval_episodes:
            stats = evaluation.evaluate_policy(config.env_id, teacher, seeds)
            epsilon = config.epsilon(step)
            if history.record_evaluation(step, stats, reporter.take_mean_loss(), epsilon):
                best_weights = network.get_weights()
            reporter.evaluation(history)
            bar.set_postfix(eval_return=f"{stats.mean:.1f}", best=f"{history.best_return:.1f}")
        if config.checkpoint_dir:
            history.env_steps = step
            history.wall_time_s = earlier_seconds + time.perf_counter() - start_time
            _save_checkpoint(config, step, checkpoint, history, best_weights)

    bar = _progress_bar(config.total_env_steps, step, f"DQN teacher {config.env_id}",
                        config.progress)
    reporter.train_begin()
    time_step = tf_env.reset()
    try:
        while step < config.total_env_steps and not _reached(config, history):
            time_step, loss = train_round(time_step)
            reporter.add_loss(float(loss))
            previous, step = step, int(env_step.numpy())
            bar.update(step - previous)
            if config.eval_every and step // config.eval_every > previous // config.eval_every:
                evaluate()
        if last_checked != step:
            evaluate()
    finally:
        bar.close()
        tf_env.close()
    if config.keep_best and best_weights is not None:
        network.set_weights(best_weights)
    history.env_steps = step
    history.wall_time_s = earlier_seconds + time.perf_counter() - start_time
    reporter.train_end()
    result = TrainedDqnTeacher(agent=agent, teacher=teacher, env_id=config.env_id,
                               history=history, replay_buffer=replay_buffer,
                               seconds=time.perf_counter() - start_time)
    if out_dir:
        save_dqn_teacher(result, config, out_dir)
    return result


def _reached(config: DQNConfig, history: DQNHistory) -> bool:
    return (config.target_return is not None and history.best_return is not None
            and history.best_return >= config.target_return)


def _save_checkpoint(config, step, checkpoint, history, best_weights) -> None:
    def write(folder):
        checkpoint.write(os.path.join(folder, "agent"))
        np.savez(os.path.join(folder, "best_weights.npz"), *(best_weights or []))
        files.write_json(os.path.join(folder, "state.json"), {
            "format": "tfkd.agents.dqn.checkpoint/1", "env_id": config.env_id, "step": step,
            "has_best_weights": best_weights is not None, "history": history.as_dict(),
            "config": config.as_dict()})

    files.save_checkpoint(config.checkpoint_dir, f"ckpt-{int(step)}", write, "ckpt-",
                          step=int(step))


def _restore(folder, config, checkpoint) -> tuple[DQNHistory, list | None]:
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as file:
            saved = json.load(file)
        config.check_resumable(saved["config"])
        checkpoint.read(os.path.join(folder, "agent")).assert_existing_objects_matched()
        best = files.read_array_list(os.path.join(folder, "best_weights.npz"))
        history = DQNHistory.from_dict(saved["history"])
    except (OSError, tf.errors.OpError, AssertionError, KeyError, TypeError, ValueError,
            json.JSONDecodeError) as error:
        raise ValueError(
            f"Cannot resume from checkpoint {folder!r}: it is corrupt or was written for "
            f"another environment or network ({error}). Delete it or pass another "
            "checkpoint_dir.") from None
    return history, best if saved["has_best_weights"] else None


def save_dqn_teacher(trained: TrainedDqnTeacher, config: DQNConfig, out_dir: str,
                     save_policy: bool = True) -> None:
    """Saves a teacher folder: ``teacher.json``, Q-network weights, greedy policy SavedModel.

    Every file is renamed into place once complete, ``teacher.json`` last.

    Raises:
      tfkd.rl.teacher_io.NonFiniteError: if the weights hold NaN or inf.
    """
    network = trained.agent._q_network
    teacher_io.check_finite(network.get_weights(), "the Q-network")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".q_network.tmp-", dir=out_dir) as temporary:
        tf.train.Checkpoint(q_network=network).write(os.path.join(temporary, Q_NETWORK_PREFIX))
        for name in os.listdir(temporary):
            os.replace(os.path.join(temporary, name), os.path.join(out_dir, name))
    if save_policy:
        files.replace_directory(
            lambda folder: policy_saver.PolicySaver(trained.agent.policy, batch_size=None)
            .save(folder), os.path.join(out_dir, POLICY_DIR))
    teacher_io.write_teacher_description(out_dir, {
        "backend": "tf-agents", "env_id": trained.env_id,
        "hidden_units": list(config.hidden_units), "params": count_params(trained.teacher),
        "best_return": trained.history.best_return,
        "selection_seeds": trained.history.selection_seeds,
        "history": trained.history.as_dict(), "config": config.as_dict()})


def load_dqn_teacher(teacher_dir: str) -> QNetworkTeacher:
    """Loads a teacher saved by :func:`train_dqn_teacher` (no pickle involved).

    Raises:
      FileNotFoundError: if ``teacher_dir`` or its ``teacher.json`` is missing.
      ValueError: if its files are corrupt, do not match each other, or name an
        unknown env id.
    """
    description = teacher_io.read_teacher_description(teacher_dir)
    if description.get("backend") != "tf-agents":
        raise ValueError(f"{teacher_dir!r} holds a {description.get('backend')!r} teacher; "
                         "load it with tfkd.rl.dqn.load_dqn_teacher.")
    env_id = description["env_id"]
    env = make_tf_agents_env(env_id)
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    env.close()
    network = build_q_network(observation_spec, action_spec, description["hidden_units"])
    network.create_variables()
    try:
        tf.train.Checkpoint(q_network=network).read(
            os.path.join(teacher_dir, Q_NETWORK_PREFIX)).assert_consumed()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise ValueError(
            f"Cannot read the Q-network weights in {teacher_dir!r}: missing, corrupt or not "
            f"matching {teacher_io.TEACHER_FILE} ({error}).") from None
    return QNetworkTeacher(network, env_id=env_id)


def _progress_bar(total: int, initial: int, description: str, enabled: bool):
    return tqdm(total=total, initial=min(initial, total), desc=description,
                disable=not enabled, unit="step", mininterval=1.0, dynamic_ncols=True)
