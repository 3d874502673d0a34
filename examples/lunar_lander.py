"""LunarLander-v3 (gymnasium[box2d]): a TF-Agents DQN teacher, a 1/20-size student.

The lander has an 8-dimensional state and 4 discrete actions; a return of 200
counts as solved. The teacher is a double DQN with a (256, 256) QNetwork
trained by TF-Agents (``tfkd.agents.train_dqn_teacher``); the student, an MLP
with one hidden layer of 64 units (about 1/80 of the teacher's parameters), is
distilled student-driven (DAgger; Ross et al. 2011) with ``tfkd.rl``.
Training is checkpointed: run the script again and it resumes.

    python examples/lunar_lander.py                  # tens of minutes on 2 cores
    python examples/lunar_lander.py --teacher-steps 300000 --checkpoint-dir ll_ckpt
    TFKD_EXAMPLE_TINY=1 python examples/lunar_lander.py   # smoke test
"""

import argparse
import dataclasses
import os

# TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402

ENV_ID = "LunarLander-v3"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=200_000)
    parser.add_argument("--distill-steps", type=int, default=50_000)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="checkpoint the teacher's training here (resumes if present)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--tiny", action="store_true",
                        default=bool(os.environ.get("TFKD_EXAMPLE_TINY")),
                        help="a few hundred steps only (a smoke test)")
    args = parser.parse_args()

    total_steps = 1_000 + args.teacher_steps  # 1k of random play first
    teacher_config = agents.DQNConfig(
        env_id=ENV_ID, total_env_steps=total_steps, buffer_capacity=100_000, learning_rate=5e-4,
        train_every=16, gradient_steps=8, batch_size=128, epsilon_final=0.02,
        epsilon_fraction=min(1.0, 50_000 / total_steps), eval_every=20_000, eval_episodes=5,
        target_return=250, checkpoint_dir=args.checkpoint_dir)
    distill_config = rl.DistillConfig(
        env_id=ENV_ID, total_env_steps=args.distill_steps, steps_per_round=5_000,
        train_steps_per_round=1_000, eval_episodes=5)
    episodes = args.episodes
    if args.tiny:
        teacher_config = dataclasses.replace(
            teacher_config, hidden_units=(32,), total_env_steps=300, learning_starts=100,
            eval_every=200, eval_episodes=1, target_return=None, progress=False)
        distill_config = rl.DistillConfig(
            env_id=ENV_ID, total_env_steps=200, steps_per_round=100, train_steps_per_round=10,
            eval_episodes=1, progress=False)
        episodes = 2

    trained = agents.train_dqn_teacher(teacher_config)
    print(f"teacher: best greedy return during training {trained.best_return:.1f}")

    student = tfkd.models.build_mlp((8,), 4, hidden_units=(64,), name="student")
    rl.distill_student_driven(trained.teacher, student, distill_config)

    comparison = rl.compare_policies(ENV_ID, trained.teacher, student, num_episodes=episodes)
    for name, stats, params in (
            ("teacher", comparison.teacher_return, comparison.teacher_params),
            ("student", comparison.student_return, comparison.student_params)):
        print(f"{name}: {params:>6,} parameters, return {stats.mean:.1f} ± {stats.std:.1f}")
    print(f"agreement on the student's states: {100 * comparison.agreement:.0f}%")


if __name__ == "__main__":
    main()
