"""Several teachers of one task as one teacher: their policies averaged, per
state the most confident one, or (Q-value teachers) their largest Q-values.

The first two combine the teachers' policies at the distillation loss's
temperature ``T``, the policies the student is trained to match,
π_k = softmax(t_k / T):

- ``"mean"``: π̄ = (1/K) Σ_k π_k, returned as the logits ``T · log π̄``, so
  that the loss's ``softmax(· / T)`` gives back π̄ exactly (the averaged
  ensemble of Hinton et al. 2015, "Distilling the Knowledge in a Neural
  Network", §2, applied to policies as in Rusu et al. 2016);
- ``"most_confident"``: per state, the outputs of the teacher whose policy
  puts the most probability on one action, k* = argmax_k max_a π_k(a)
  (one teacher's knowledge per state, where averaging would blur two
  confident but different teachers).

With a low temperature (``q_value_kl``'s 0.01 on Q-values) the mean is
nearly the vote of the teachers' greedy actions, so two weaker teachers
that agree outvote a better one.

``"max_q"`` is for teachers whose outputs are Q-values of one task (DQN
teachers of one env and discount): per state and action the largest,
Q̄(s, a) = max_k Q_k(s, a). Its greedy policy is generalized policy
improvement (Barreto et al. 2017, "Successor Features for Transfer in
Reinforcement Learning", Theorem 1): with exact Q_k = Q^{π_k} it does at
least as well as every teacher, from every state, so a weaker teacher only
takes over where its Q-values say it does better. DQN's Q-values are
estimates, though, and a maximum over several favours the actions whose
values are overestimated (the bias Double DQN corrects): with comparable
LunarLander teachers its student is the weakest of the three
(docs/multi_task.md). The temperature does not enter; on logits the
maximum has no such meaning.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf

from tfkd.ops.checks import check_temperature


def mean_policy_logits(teacher_outputs: Sequence[tf.Tensor], temperature: float) -> tf.Tensor:
    """``T · log((1/K) Σ_k softmax(t_k / T))``: logits of the teachers' mean policy.

    Args:
        teacher_outputs: K tensors ``[batch, num_actions]`` (logits or Q-values).
        temperature: T > 0, the distillation loss's teacher temperature.
    """
    _check(teacher_outputs, temperature)
    log_policies = tf.stack([tf.nn.log_softmax(tf.cast(t, tf.float32) / temperature)
                             for t in teacher_outputs])
    log_mean = tf.reduce_logsumexp(log_policies, axis=0) - math.log(len(teacher_outputs))
    return temperature * log_mean


def most_confident_outputs(teacher_outputs: Sequence[tf.Tensor], temperature: float) -> tf.Tensor:
    """Per row, the outputs of the teacher with the largest ``max_a softmax(t_k / T)``.

    Ties go to the first such teacher.
    """
    _check(teacher_outputs, temperature)
    stacked = tf.stack([tf.cast(t, tf.float32) for t in teacher_outputs])  # [K, batch, A]
    confidence = tf.reduce_max(tf.nn.softmax(stacked / temperature), axis=-1)  # [K, batch]
    chosen = tf.argmax(confidence, axis=0)  # [batch]
    return tf.gather(tf.transpose(stacked, [1, 0, 2]), chosen, axis=1, batch_dims=1)


def max_q_values(teacher_outputs: Sequence[tf.Tensor], temperature: float) -> tf.Tensor:
    """``max_k Q_k(s, a)``, elementwise: the Q-values of generalized policy improvement.

    Args:
        teacher_outputs: K tensors ``[batch, num_actions]`` of Q-values.
        temperature: checked like the other combinations', not used.
    """
    _check(teacher_outputs, temperature)
    return tf.reduce_max(tf.stack([tf.cast(t, tf.float32) for t in teacher_outputs]), axis=0)


_COMBINE = {"mean": mean_policy_logits, "most_confident": most_confident_outputs,
            "max_q": max_q_values}
COMBINATIONS = tuple(_COMBINE)


class TeacherEnsemble:
    """K teachers of one task, callable as one teacher network.

    Args:
        teachers: networks mapping observations to ``[batch, num_actions]``
            (Keras models, TF-Agents teachers, any callable).
        combination: ``"mean"``, ``"most_confident"`` or (Q-value teachers)
            ``"max_q"``; see the module docstring.
        temperature: the distillation loss's teacher temperature T.

    Raises:
        ValueError: fewer than two teachers, an unknown combination or a bad
            temperature.
    """

    def __init__(self, teachers: Sequence[Callable], combination: str = "mean",
                 temperature: float = 1.0):
        if len(teachers) < 2:
            raise ValueError(f"an ensemble needs at least two teachers, got {len(teachers)}")
        if combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {', '.join(COMBINATIONS)}, "
                             f"got {combination!r}")
        self.teachers = list(teachers)
        self.combination = combination
        self.temperature = check_temperature(temperature, "temperature")

    @property
    def variables(self) -> list:
        """All the teachers' weights (``tfkd.models.count_params`` counts them)."""
        found = []
        for teacher in self.teachers:
            found += list(getattr(teacher, "weights", None) or getattr(teacher, "variables", []))
        return found

    def __call__(self, observations):
        outputs = [teacher(observations) for teacher in self.teachers]
        return _COMBINE[self.combination](outputs, self.temperature)


def _check(teacher_outputs, temperature) -> None:
    if not teacher_outputs:
        raise ValueError("no teacher outputs to combine")
    shapes = {tuple(t.shape) for t in teacher_outputs}
    if len(shapes) > 1:
        raise ValueError(f"the teachers' outputs differ in shape: {sorted(shapes)}")
    check_temperature(temperature, "temperature")
