"""Reinforcement-learning side of tfkd: environments, rollouts, datasets,
distillation loops, evaluation, a compact DQN (single-task, and multi-task from
scratch) and kickstarting (DQN plus a scheduled distillation term).

Needs gymnasium only (no TF-Agents). Teachers are any callable mapping a batch
of observations to logits or Q-values.
"""

from tfkd.rl.datasets import (
    DatasetFileError,
    DistillationBuffer,
    load_npz,
    save_npz,
    to_tf_dataset,
)
from tfkd.rl.callbacks import RoundCSVLogger, RoundTensorBoard
from tfkd.rl.checkpoint import CheckpointMismatchError
from tfkd.rl.loops import (
    DistillationHistory,
    MultiTaskHistory,
    DistillConfig,
    distill,
    distill_multi_task,
    distill_student_driven,
    distill_teacher_driven,
)
from tfkd.rl.dqn import DQNConfig, DQNHistory, train_dqn
from tfkd.rl.multi_task_dqn import MultiTaskDQNHistory, train_multi_task_dqn
# Binds the module too: rl.kickstart.kickstart(...), like rl.dqn.train_dqn.
from tfkd.rl.kickstart import KickstartConfig
from tfkd.rl.envs import (
    EnvSpec,
    check_discrete,
    check_observations,
    env_spec,
    is_atari,
    is_minatar,
    make_atari_env,
    make_env,
    make_vector_env,
)
from tfkd.rl.evaluation import (
    PolicyComparison,
    ReturnStats,
    action_agreement,
    compare_policies,
    evaluate_policy,
    held_out_seeds,
    inference_latency,
    median_call_seconds,
    normalized_score,
    random_policy,
    selection_seeds,
)
from tfkd.rl.policies import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    NetworkOutputs,
    Policy,
    UniformRandomPolicy,
    as_policy,
    network_outputs,
)
from tfkd.rl.plotting import plot_history
from tfkd.rl.rollouts import Rollout, RolloutCollector
from tfkd.rl.seeding import seed_everything

__all__ = [
    "CheckpointMismatchError",
    "DQNConfig",
    "DQNHistory",
    "DatasetFileError",
    "DistillConfig",
    "DistillationBuffer",
    "DistillationHistory",
    "MultiTaskDQNHistory",
    "MultiTaskHistory",
    "EnvSpec",
    "EpsilonGreedyPolicy",
    "KickstartConfig",
    "GreedyPolicy",
    "MixturePolicy",
    "NetworkOutputs",
    "Policy",
    "PolicyComparison",
    "ReturnStats",
    "Rollout",
    "RolloutCollector",
    "RoundCSVLogger",
    "RoundTensorBoard",
    "UniformRandomPolicy",
    "action_agreement",
    "as_policy",
    "check_discrete",
    "check_observations",
    "compare_policies",
    "distill",
    "distill_multi_task",
    "distill_student_driven",
    "distill_teacher_driven",
    "env_spec",
    "evaluate_policy",
    "held_out_seeds",
    "inference_latency",
    "median_call_seconds",
    "is_atari",
    "is_minatar",
    "load_npz",
    "make_atari_env",
    "make_env",
    "make_vector_env",
    "network_outputs",
    "normalized_score",
    "plot_history",
    "random_policy",
    "save_npz",
    "seed_everything",
    "selection_seeds",
    "to_tf_dataset",
    "train_dqn",
    "train_multi_task_dqn",
]
