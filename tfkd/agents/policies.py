"""A Keras 3 student as a TF-Agents policy, and evaluation with TF-Agents drivers.

:class:`StudentPolicy` runs a tfkd student (a ``keras.Model`` mapping
observations to logits or Q-values) as a ``TFPolicy``: greedy by default, or
sampling from ``softmax(outputs / temperature)``. TF-Agents drivers, metrics
and ``PyTFEagerPolicy`` then use it like any other policy.
:func:`evaluate_policy` runs any TF-Agents policy for whole episodes with a
``PyDriver`` and TF-Agents' ``AverageReturnMetric`` and returns the same
``ReturnStats`` as ``tfkd.rl.evaluation.evaluate_policy`` (which evaluates
networks and tfkd policies on seeded episodes; use it for anything that
is not a TF-Agents policy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.drivers import py_driver
from tf_agents.environments import py_environment
from tf_agents.metrics import py_metrics
from tf_agents.policies import py_policy, py_tf_eager_policy, tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

from tfkd.rl import evaluation

__all__ = ["EpisodeReturns", "StudentPolicy", "evaluate_policy"]


class StudentPolicy(tf_policy.TFPolicy):
    """A Keras 3 model ``observations -> (batch, num_actions)`` as a ``TFPolicy``.

    Args:
      model: the student, a ``keras.Model`` (Keras 3) or any callable.
      time_step_spec: the environment's ``TimeStep`` spec (tensor or array specs).
      action_spec: the environment's scalar, bounded integer action spec.
      temperature: None for the greedy policy (argmax); otherwise actions are
        sampled from ``softmax(outputs / temperature)``.

    Raises:
      ValueError: if the model's output width is not the number of actions.
    """

    def __init__(self, model: Any, time_step_spec: ts.TimeStep, action_spec: Any,
                 temperature: float | None = None) -> None:
        time_step_spec = tensor_spec.from_spec(time_step_spec)
        action_spec = tensor_spec.from_spec(action_spec)
        self._num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1
        self._model = model
        self._temperature = temperature
        super().__init__(time_step_spec, action_spec, validate_args=True)
        dummy = tf.zeros((1, *time_step_spec.observation.shape), time_step_spec.observation.dtype)
        width = int(self._outputs(dummy).shape[-1])
        if width != self._num_actions:
            raise ValueError(f"The student outputs {width} values per observation; the "
                             f"environment has {self._num_actions} actions.")

    @property
    def model(self) -> Any:
        """The wrapped student."""
        return self._model

    def _outputs(self, observations: tf.Tensor) -> tf.Tensor:
        return tf.cast(self._model(observations, training=False), tf.float32)

    def _distribution(self, time_step: ts.TimeStep, policy_state: Any) -> policy_step.PolicyStep:
        outputs = self._outputs(time_step.observation)
        if self._temperature is None:
            greedy = tf.argmax(outputs, axis=-1, output_type=self.action_spec.dtype)
            distribution = tfp.distributions.Deterministic(greedy + self.action_spec.minimum)
        else:
            distribution = tfp.distributions.Categorical(
                logits=outputs / self._temperature, dtype=self.action_spec.dtype)
        return policy_step.PolicyStep(distribution, policy_state)


class EpisodeReturns:
    """A TF-Agents trajectory observer that records the return of each episode."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self._current = 0.0

    def __call__(self, trajectory: trajectory_lib.Trajectory) -> None:
        if not trajectory.is_boundary():
            self._current += float(np.sum(trajectory.reward))
        if trajectory.is_last():
            self.returns.append(self._current)
            self._current = 0.0


def evaluate_policy(policy: tf_policy.TFPolicy | py_policy.PyPolicy,
                    env: py_environment.PyEnvironment, num_episodes: int = 10):
    """Runs ``policy`` for ``num_episodes`` whole episodes with a TF-Agents ``PyDriver``.

    Args:
      policy: a ``TFPolicy`` (run eagerly through ``PyTFEagerPolicy`` with
        ``tf.function``) or a ``PyPolicy``.
      env: an unbatched ``PyEnvironment``, e.g. :class:`GymnasiumEnvironment`.
      num_episodes: number of episodes.

    Returns:
      A ``tfkd.rl.evaluation.ReturnStats`` (no seeds: the episodes follow
      ``env``'s own reset sequence); its mean equals TF-Agents'
      ``AverageReturnMetric`` over the same episodes.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    if isinstance(policy, tf_policy.TFPolicy):
        policy = py_tf_eager_policy.PyTFEagerPolicy(policy, use_tf_function=True)
    returns = EpisodeReturns()
    average_return = py_metrics.AverageReturnMetric(buffer_size=num_episodes)
    driver = py_driver.PyDriver(env, policy, observers=[returns, average_return],
                                max_episodes=num_episodes)
    driver.run(env.reset())
    return evaluation.ReturnStats.from_returns(returns.returns[:num_episodes])
