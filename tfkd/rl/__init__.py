"""Reinforcement-learning side of tfkd: environments, rollouts, datasets,
distillation loops, evaluation, and a compact DQN baseline.

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
from tfkd.rl.distill import (
    DistillationHistory,
    DistillConfig,
    distill,
    distill_student_driven,
    distill_teacher_driven,
)
from tfkd.rl.dqn import DQNConfig, DQNHistory, train_dqn
from tfkd.rl.envs import (
    EnvSpec,
    check_discrete,
    check_observations,
    env_spec,
    make_atari_env,
    make_env,
    make_vector_env,
)
from tfkd.rl.evaluation import (
    PolicyComparison,
    ReturnStats,
    action_agreement,
    compare_policies,
    count_params,
    evaluate_policy,
    inference_latency,
)
from tfkd.rl.policies import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    NetworkOutputs,
    Policy,
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
    "DistillationBuffer",
    "DistillConfig",
    "DistillationHistory",
    "EnvSpec",
    "EpsilonGreedyPolicy",
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
    "action_agreement",
    "as_policy",
    "check_discrete",
    "check_observations",
    "compare_policies",
    "count_params",
    "distill",
    "distill_student_driven",
    "distill_teacher_driven",
    "env_spec",
    "evaluate_policy",
    "inference_latency",
    "load_npz",
    "make_atari_env",
    "make_env",
    "make_vector_env",
    "network_outputs",
    "plot_history",
    "save_npz",
    "seed_everything",
    "to_tf_dataset",
    "train_dqn",
]
