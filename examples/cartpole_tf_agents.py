"""CartPole-v1: a TF-Agents DQN teacher distilled into a tiny Keras 3 student.

1. Train a double-DQN teacher with TF-Agents (``tfkd.agents.train_dqn_teacher``:
   QNetwork (256, 256), replay buffer, driver, target network).
2. Distil it student-driven (DAgger: the student acts, the teacher labels the
   states it visits; Ross et al. 2011, Czarnecki et al. 2019) into an MLP
   with one hidden layer of 32 units, about 1/60 of the teacher's size.
3. Evaluate both: the student through TF-Agents' own driver and metric
   (``tfkd.agents.StudentPolicy``), and side by side with ``tfkd.rl``.

    python examples/cartpole_tf_agents.py           # about 5 minutes on 2 cores
    TFKD_EXAMPLE_TINY=1 python examples/cartpole_tf_agents.py   # smoke test
"""

import argparse
import dataclasses
import os

# TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        default=bool(os.environ.get("TFKD_EXAMPLE_TINY")),
                        help="a few hundred steps only (a smoke test)")
    args = parser.parse_args()
    env_id = "CartPole-v1"

    teacher_config = agents.DQNConfig(
        env_id=env_id, total_env_steps=51_000, train_every=16, gradient_steps=8, batch_size=128,
        epsilon_final=0.02, eval_every=2_500, eval_episodes=5, target_return=490)
    distill_config = rl.DistillConfig(env_id=env_id, total_env_steps=20_000,
                                            steps_per_round=2_000, eval_episodes=5,
                                            target_return=490)
    episodes = 20
    if args.tiny:
        teacher_config = dataclasses.replace(
            teacher_config, hidden_units=(32,), total_env_steps=300, learning_starts=100,
            eval_every=200, eval_episodes=1, target_return=None, progress=False)
        distill_config = rl.DistillConfig(env_id=env_id, total_env_steps=200,
                                                steps_per_round=100, train_steps_per_round=10,
                                                eval_episodes=1, progress=False)
        episodes = 2

    trained = agents.train_dqn_teacher(teacher_config)
    teacher = trained.teacher  # observations -> Q-values; a frozen tf_keras network

    student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
    rl.distill_student_driven(teacher, student, distill_config)

    # The Keras 3 student as a TF-Agents policy, run by a TF-Agents driver.
    env = agents.GymnasiumEnvironment(env_id, seed=123)
    policy = agents.StudentPolicy(student, env.time_step_spec(), env.action_spec())
    stats = agents.evaluate_policy(policy, env, num_episodes=episodes)
    print(f"student as a TF-Agents policy: return {stats.mean:.1f} ± {stats.std:.1f}")

    comparison = rl.compare_policies(env_id, teacher, student, num_episodes=episodes)
    for name, stats, params in (
            ("teacher", comparison.teacher_return, comparison.teacher_params),
            ("student", comparison.student_return, comparison.student_params)):
        print(f"{name}: {params:>6,} parameters, return {stats.mean:.1f} ± {stats.std:.1f}")
    print(f"student reaches {comparison.percent_of_teacher:.0f}% of the teacher's return, "
          f"agreeing on {100 * comparison.agreement:.0f}% of its actions")


if __name__ == "__main__":
    main()
