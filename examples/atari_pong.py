"""Atari Pong (ale-py, ROMs included): Nature-CNN teacher, smaller CNN student.

The DQN recipe of Mnih et al. (2015): 84x84 grey frames, 4 stacked, frame
skip 4 (``tfkd.rl.make_atari_env``), and the Nature CNN. The teacher is a
TF-Agents double DQN whose QNetwork is the Nature CNN
(``tfkd.agents.train_dqn_teacher`` picks it for ``ALE/...`` ids); the student
is ``tfkd.models.build_nature_cnn`` with half the filters and a 128-unit dense
layer (about 1/15 of the teacher's parameters), distilled student-driven.

Training Pong to a winning teacher takes millions of frames — many hours on 2
CPU cores, so run it on a GPU; the test suite runs this script for a few steps
only. Training is checkpointed (replay memory included): rerun to resume.

    python examples/atari_pong.py --checkpoint-dir pong_ckpt      # hours
    TFKD_EXAMPLE_TINY=1 python examples/atari_pong.py              # smoke test
"""

import argparse
import os

# TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402

ENV_ID = "ALE/Pong-v5"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=2_000_000)
    parser.add_argument("--distill-steps", type=int, default=200_000)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--tiny", action="store_true",
                        default=bool(os.environ.get("TFKD_EXAMPLE_TINY")),
                        help="a few steps only (a smoke test)")
    args = parser.parse_args()

    # Mnih et al. 2015 / Dopamine settings, with a smaller replay memory
    # (TF-Agents allocates it up front: 28 KB per stacked observation).
    total_steps = 20_000 + args.teacher_steps  # 20k of random play first
    teacher_config = agents.DQNConfig(
        env_id=ENV_ID, hidden_units=(512,), total_env_steps=total_steps, learning_starts=20_000,
        buffer_capacity=100_000, batch_size=32, learning_rate=1e-4, gamma=0.99,
        train_every=4, gradient_steps=1, epsilon_final=0.01,
        epsilon_fraction=min(1.0, 250_000 / total_steps), target_update_every=8_000,
        eval_every=100_000, eval_episodes=3, checkpoint_dir=args.checkpoint_dir)
    distill_config = rl.DistillConfig(
        env_id=ENV_ID, total_env_steps=args.distill_steps, steps_per_round=10_000,
        train_steps_per_round=2_000, buffer_capacity=100_000, batch_size=64, num_envs=4,
        eval_episodes=2)
    if args.tiny:
        teacher_config = agents.DQNConfig(
            env_id=ENV_ID, hidden_units=(16,), total_env_steps=48, learning_starts=32,
            buffer_capacity=64, batch_size=4, train_every=4, gradient_steps=1, eval_every=0,
            eval_episodes=0, checkpoint_dir=args.checkpoint_dir, progress=False)
        distill_config = rl.DistillConfig(
            env_id=ENV_ID, total_env_steps=16, steps_per_round=8, train_steps_per_round=2,
            buffer_capacity=64, batch_size=4, num_envs=2, eval_episodes=0, progress=False)

    trained = agents.train_dqn_teacher(teacher_config)
    teacher = trained.teacher
    student = tfkd.models.build_nature_cnn(6, filters=(16, 32, 32), dense_units=128,
                                           name="student")
    print(f"teacher: {tfkd.models.count_params(teacher):,} parameters; "
          f"student: {tfkd.models.count_params(student):,}")
    rl.distill_student_driven(teacher, student, distill_config)
    if args.tiny:
        return  # A Pong episode is thousands of frames: no evaluation in a smoke test.
    comparison = rl.compare_policies(ENV_ID, teacher, student, num_episodes=args.episodes)
    print(f"teacher return {comparison.teacher_return.mean:.1f}, "
          f"student return {comparison.student_return.mean:.1f}, "
          f"agreement {100 * comparison.agreement:.0f}%")


if __name__ == "__main__":
    main()
