"""Train a DQN teacher with TF-Agents' ``DqnAgent``, checkpoint it, save it.

The pieces are TF-Agents' own: a ``QNetwork`` (an MLP, or the Nature CNN for
Atari), a ``DqnAgent`` with a target network and epsilon-greedy exploration,
a ``TFUniformReplayBuffer`` filled by a ``DynamicStepDriver``, and a
``common.Checkpointer`` that saves agent, replay buffer and step counter so an
interrupted run resumes where it stopped.

The trained teacher is saved in a directory that loads without pickle:

* ``teacher.json`` — what rebuilds the ``QNetwork`` (env id, layer sizes);
* ``q_network-*`` — its weights (a ``tf.train.Checkpoint``);
* ``policy/`` — the greedy policy as a SavedModel (``PolicySaver``), for
  serving with TF-Agents or TensorFlow alone.

References:
  Mnih et al. 2015, "Human-level control through deep reinforcement
  learning", Nature 518. Guadarrama et al. 2018, "TF-Agents".
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

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

from tfkd.agents.environment import GymnasiumEnvironment
from tfkd.agents.policies import evaluate_policy
from tfkd.agents.teachers import QNetworkTeacher

__all__ = ["DqnTeacherConfig", "TrainedDqnTeacher", "build_q_network", "load_dqn_teacher",
           "make_tf_agents_env", "train_dqn_teacher"]

TEACHER_CONFIG_FILE = "teacher.json"
Q_NETWORK_PREFIX = "q_network"
POLICY_DIR = "policy"
NATURE_CNN_CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


@dataclass
class DqnTeacherConfig:
    """Hyperparameters of a DQN teacher (defaults: double DQN that solves CartPole-v1).

    Attributes:
      fc_layer_params: hidden layer sizes of the Q-network's dense part.
      num_steps: environment steps of training (after the random ones).
      initial_collect_steps: random-policy steps that fill the replay buffer first.
      train_period: environment steps collected between rounds of updates.
      gradient_steps: gradient steps per round of updates.
      replay_capacity: replay buffer size, in transitions.
      batch_size: transitions per gradient step.
      learning_rate: Adam learning rate.
      gamma: discount factor of the TD target.
      n_step_update: length of the n-step TD return.
      epsilon_start, epsilon_end, epsilon_decay_steps: linear epsilon schedule.
      target_update_period: gradient steps between target-network updates.
      target_update_tau: weight of the online network in each target update
        (1.0: a hard copy).
      double_q: use double DQN targets (van Hasselt et al. 2016, ``DdqnAgent``).
      gradient_clipping: global-norm clip of the gradients (None: no clipping).
      eval_interval: steps between greedy evaluations (the best is kept).
      eval_episodes: episodes per evaluation (0: never evaluate; keep the last weights).
      target_return: stop once an evaluation reaches this mean return.
      checkpoint_interval: steps between checkpoints (with ``checkpoint_dir``).
      seed: seeds TensorFlow and the environments.
    """

    fc_layer_params: Sequence[int] = (256, 256)
    num_steps: int = 50_000
    initial_collect_steps: int = 1_000
    train_period: int = 16
    gradient_steps: int = 8
    replay_capacity: int = 50_000
    batch_size: int = 128
    learning_rate: float = 1e-3
    gamma: float = 0.99
    n_step_update: int = 1
    epsilon_start: float = 1.0
    epsilon_end: float = 0.02
    epsilon_decay_steps: int = 10_000
    target_update_period: int = 250
    target_update_tau: float = 1.0
    double_q: bool = True
    gradient_clipping: float | None = 10.0
    eval_interval: int = 2_500
    eval_episodes: int = 5
    target_return: float | None = None
    checkpoint_interval: int = 5_000
    seed: int = 0


@dataclass
class TrainedDqnTeacher:
    """A trained DQN teacher.

    Attributes:
      agent: the TF-Agents ``DqnAgent``.
      teacher: its Q-network as a tfkd teacher (``observations -> Q-values``).
      env_id: the gymnasium id it was trained on.
      history: ``(step, mean greedy return)`` of each evaluation.
      best_return: the best mean evaluation return (its weights are kept).
      seconds: wall time of training.
      replay_buffer: the ``TFUniformReplayBuffer`` it trained from (see
        :func:`tfkd.agents.replay_buffer_dataset`).
    """

    agent: dqn_agent.DqnAgent
    teacher: QNetworkTeacher
    env_id: str
    replay_buffer: Any = None
    history: list = field(default_factory=list)
    best_return: float = float("-inf")
    seconds: float = 0.0


def make_tf_agents_env(env_id: str, seed: int | None = None) -> GymnasiumEnvironment:
    """A gymnasium environment as a TF-Agents ``PyEnvironment``.

    ``ALE/...`` ids get the DQN frame preprocessing (84×84×4 uint8,
    ``tfkd.rl.envs.make_atari_env``); other ids must have vector observations.
    """
    from tfkd.rl.envs import make_atari_env, make_env

    if env_id.startswith("ALE/"):
        return GymnasiumEnvironment(make_atari_env(env_id), seed=seed, allow_images=True)
    return GymnasiumEnvironment(make_env(env_id), seed=seed)


def build_q_network(observation_spec, action_spec,
                    fc_layer_params: Sequence[int]) -> q_network.QNetwork:
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
            fc_layer_params=tuple(fc_layer_params))
    return q_network.QNetwork(observation_spec, action_spec,
                              fc_layer_params=tuple(fc_layer_params))


def _linear_epsilon(env_step: tf.Variable, config: DqnTeacherConfig) -> Callable[[], tf.Tensor]:
    def epsilon() -> tf.Tensor:
        fraction = tf.minimum(
            1.0, tf.cast(env_step, tf.float32) / float(config.epsilon_decay_steps))
        return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)
    return epsilon


def _make_agent(tf_env, config: DqnTeacherConfig, env_step: tf.Variable) -> dqn_agent.DqnAgent:
    observation_spec = tensor_spec.from_spec(tf_env.observation_spec())
    action_spec = tensor_spec.from_spec(tf_env.action_spec())
    agent_class = dqn_agent.DdqnAgent if config.double_q else dqn_agent.DqnAgent
    agent = agent_class(
        tf_env.time_step_spec(), action_spec,
        q_network=build_q_network(observation_spec, action_spec, config.fc_layer_params),
        optimizer=tf.keras.optimizers.Adam(learning_rate=config.learning_rate),
        epsilon_greedy=_linear_epsilon(env_step, config),
        n_step_update=config.n_step_update,
        target_update_period=config.target_update_period,
        target_update_tau=config.target_update_tau,
        td_errors_loss_fn=common.element_wise_huber_loss,
        gamma=config.gamma,
        gradient_clipping=config.gradient_clipping)
    agent.initialize()
    return agent


def _open_checkpointer(checkpoint_dir: str, **objects) -> common.Checkpointer:
    """A ``Checkpointer`` over ``objects``, restored from ``checkpoint_dir`` if it holds one."""
    try:
        checkpointer = common.Checkpointer(ckpt_dir=checkpoint_dir, max_to_keep=1, **objects)
        if checkpointer.checkpoint_exists:
            checkpointer.initialize_or_restore().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise ValueError(
            f"Cannot resume from checkpoint directory {checkpoint_dir!r}: it is corrupt or "
            f"was written for another environment or network ({error}). Delete it or pass "
            "another checkpoint directory.") from error
    return checkpointer


def train_dqn_teacher(env_id: str, config: DqnTeacherConfig | None = None,
                      out_dir: str | None = None, checkpoint_dir: str | None = None,
                      progress: bool = True) -> TrainedDqnTeacher:
    """Trains a DQN teacher with TF-Agents and optionally saves it.

    Each round collects ``train_period`` transitions with the epsilon-greedy
    policy, then takes ``gradient_steps`` updates on uniform replay batches —
    one compiled ``tf.function`` per round. Every ``eval_interval`` env steps
    the greedy policy is evaluated; the best weights are kept and returned,
    and training stops early once ``target_return`` is reached.

    Args:
      env_id: a gymnasium id with a discrete action space.
      config: hyperparameters (defaults: :class:`DqnTeacherConfig`).
      out_dir: where to save the teacher (see module docstring); None: don't.
      checkpoint_dir: where to checkpoint agent, replay buffer and step; a run
        given the same directory resumes from its last checkpoint.
      progress: show a tqdm progress bar.

    Returns:
      A :class:`TrainedDqnTeacher`.

    Raises:
      ValueError: for an unsupported environment or a corrupt checkpoint.
    """
    config = config or DqnTeacherConfig()
    _check_config(config)
    tf.random.set_seed(config.seed)
    start_time = time.perf_counter()
    tf_env = tf_py_environment.TFPyEnvironment(make_tf_agents_env(env_id, seed=config.seed))
    eval_env = make_tf_agents_env(env_id, seed=config.seed + 10_000)
    env_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_step")
    agent = _make_agent(tf_env, config, env_step)

    replay_buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        agent.collect_data_spec, batch_size=tf_env.batch_size,
        max_length=config.replay_capacity)
    collect_driver = dynamic_step_driver.DynamicStepDriver(
        tf_env, agent.collect_policy, observers=[replay_buffer.add_batch],
        num_steps=config.train_period)

    checkpointer = None
    if checkpoint_dir:
        checkpointer = _open_checkpointer(
            checkpoint_dir, agent=agent, policy=agent.policy, replay_buffer=replay_buffer,
            env_step=env_step)

    if int(env_step.numpy()) == 0:
        random_policy = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(),
                                                        tf_env.action_spec())
        dynamic_step_driver.DynamicStepDriver(
            tf_env, random_policy, observers=[replay_buffer.add_batch],
            num_steps=config.initial_collect_steps).run()

    @common.function(autograph=True)
    def train_iteration(time_step):
        """``train_period`` epsilon-greedy env steps, then ``gradient_steps`` updates."""
        time_step, _ = collect_driver.run(time_step)
        env_step.assign_add(config.train_period)
        loss = tf.constant(0.0)
        for _ in tf.range(config.gradient_steps):
            experience, _ = replay_buffer.get_next(sample_batch_size=config.batch_size,
                                                   num_steps=config.n_step_update + 1)
            loss = agent.train(experience).loss
        return time_step, loss

    result = TrainedDqnTeacher(agent=agent, teacher=QNetworkTeacher(agent._q_network, env_id),
                               env_id=env_id, replay_buffer=replay_buffer)
    best_weights = None
    time_step = tf_env.reset()
    step = int(env_step.numpy())
    bar = _progress_bar(config.num_steps, step, f"DQN teacher {env_id}", progress)
    while step < config.num_steps:
        time_step, loss = train_iteration(time_step)
        previous, step = step, int(env_step.numpy())
        bar.update(step - previous)
        done = step >= config.num_steps
        evaluate = done or step // config.eval_interval > previous // config.eval_interval
        if evaluate and config.eval_episodes > 0:
            mean_return, _, _ = evaluate_policy(agent.policy, eval_env, config.eval_episodes)
            result.history.append((step, mean_return))
            bar.set_postfix(loss=f"{float(loss):.3f}", eval_return=f"{mean_return:.1f}")
            if mean_return > result.best_return:
                result.best_return = mean_return
                best_weights = agent._q_network.get_weights()
            if config.target_return is not None and mean_return >= config.target_return:
                done = True
        if checkpointer and (done or step // config.checkpoint_interval
                             > previous // config.checkpoint_interval):
            checkpointer.save(global_step=env_step)
        if done:
            break
    bar.close()
    if best_weights is not None:
        agent._q_network.set_weights(best_weights)
    result.seconds = time.perf_counter() - start_time
    if out_dir:
        save_dqn_teacher(result, config, out_dir)
    tf_env.close()
    eval_env.close()
    return result


def _check_config(config: DqnTeacherConfig) -> None:
    for name in ("num_steps", "train_period", "gradient_steps", "batch_size", "replay_capacity",
                 "eval_interval", "checkpoint_interval", "epsilon_decay_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"DqnTeacherConfig.{name} must be >= 1, got {getattr(config, name)}.")


def save_dqn_teacher(trained: TrainedDqnTeacher, config: DqnTeacherConfig, out_dir: str,
                     save_policy: bool = True) -> None:
    """Saves a trained teacher: JSON config, Q-network weights, greedy policy SavedModel."""
    os.makedirs(out_dir, exist_ok=True)
    network = trained.agent._q_network
    description = {
        "format": "tfkd.agents.dqn/1",
        "env_id": trained.env_id,
        "fc_layer_params": list(config.fc_layer_params),
        "params": trained.teacher.count_params(),
        "best_return": trained.best_return,
        "config": dataclasses.asdict(config),
    }
    with open(os.path.join(out_dir, TEACHER_CONFIG_FILE), "w", encoding="utf-8") as file:
        json.dump(description, file, indent=2)
    tf.train.Checkpoint(q_network=network).write(os.path.join(out_dir, Q_NETWORK_PREFIX))
    if save_policy:
        policy_saver.PolicySaver(trained.agent.policy, batch_size=None).save(
            os.path.join(out_dir, POLICY_DIR))


def load_dqn_teacher(teacher_dir: str) -> QNetworkTeacher:
    """Loads a teacher saved by :func:`train_dqn_teacher` (no pickle involved).

    Raises:
      FileNotFoundError: if ``teacher_dir`` holds no saved teacher.
      ValueError: if its files are corrupt or do not match each other.
    """
    config_path = os.path.join(teacher_dir, TEACHER_CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"No tfkd DQN teacher in {teacher_dir!r}: {TEACHER_CONFIG_FILE} is missing "
            "(train one with `tfkd train-teacher --out DIR`).")
    try:
        with open(config_path, encoding="utf-8") as file:
            description = json.load(file)
        env_id = description["env_id"]
        fc_layer_params = [int(units) for units in description["fc_layer_params"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"Corrupt teacher description {config_path!r}: {error}") from error
    env = make_tf_agents_env(env_id)
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    env.close()
    network = build_q_network(observation_spec, action_spec, fc_layer_params)
    network.create_variables()
    try:
        tf.train.Checkpoint(q_network=network).read(
            os.path.join(teacher_dir, Q_NETWORK_PREFIX)).assert_consumed()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise ValueError(
            f"Cannot read the Q-network weights in {teacher_dir!r}: missing, corrupt or not "
            f"matching {TEACHER_CONFIG_FILE} ({error}).") from error
    return QNetworkTeacher(network, env_id=env_id)


def _progress_bar(total: int, initial: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, disable=not enabled,
                unit="step", mininterval=1.0, dynamic_ncols=True)
