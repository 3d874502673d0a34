"""tfkd's RL losses inside Keras' own ``keras.distillation.Distiller``.

Keras 3 ships a generic distiller (``keras.distillation``). Its
``LogitsDistillation`` takes the KL of raw logits; for a DQN teacher one
wants the KL of the *sharpened* Q-value distribution softmax(q / tau) of
Policy Distillation (Rusu et al. 2016). ``tfkd.KerasDistillationLoss`` plugs
any tfkd loss into Keras' distiller:

1. train a Keras 3 DQN teacher (``tfkd.rl.train_dqn``) on CartPole-v1;
2. collect the states it visits, epsilon-greedy (``tfkd.rl.RolloutCollector``);
3. fit a small student with ``keras.distillation.Distiller`` and
   ``tfkd.losses.QValueKL`` (plus a little cross-entropy on the teacher's
   greedy actions), then evaluate it.

    python examples/keras_distiller.py               # a few minutes on 2 cores
    TFKD_EXAMPLE_TINY=1 python examples/keras_distiller.py   # smoke test
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfkd  # noqa: E402
from tfkd import rl  # noqa: E402

ENV_ID = "CartPole-v1"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=50_000)
    parser.add_argument("--dataset-steps", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--tiny", action="store_true",
                        default=bool(os.environ.get("TFKD_EXAMPLE_TINY")),
                        help="a few hundred steps only (a smoke test)")
    args = parser.parse_args()
    if args.tiny:
        args.teacher_steps, args.dataset_steps, args.epochs = 400, 200, 1
    episodes = 2 if args.tiny else 20

    teacher = tfkd.models.build_mlp((4,), 2, hidden_units=(256, 256), name="teacher")
    rl.train_dqn(teacher, rl.DQNConfig(env_id=ENV_ID, total_env_steps=args.teacher_steps,
                                       learning_starts=min(1_000, args.teacher_steps // 2),
                                       eval_every=max(1, args.teacher_steps // 5),
                                       eval_episodes=5, progress=not args.tiny))

    env = rl.make_vector_env(ENV_ID, num_envs=8)
    collector = rl.RolloutCollector(env, teacher, seed=0)
    explore = rl.EpsilonGreedyPolicy(rl.GreedyPolicy(teacher), num_actions=2, epsilon=0.1)
    rollout = collector.collect(explore, args.dataset_steps)
    env.close()
    teacher_actions = np.argmax(rollout.teacher_outputs, axis=-1)

    student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=tfkd.KerasDistillationLoss(tfkd.losses.QValueKL(temperature=0.01)),
        student_loss_weight=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(rollout.observations, teacher_actions, batch_size=64, epochs=args.epochs,
                  verbose=0 if args.tiny else 2)

    comparison = rl.compare_policies(ENV_ID, teacher, student, num_episodes=episodes)
    for name, stats, params in (
            ("teacher", comparison.teacher_return, comparison.teacher_params),
            ("student", comparison.student_return, comparison.student_params)):
        print(f"{name}: {params:>6,} parameters, return {stats.mean:.1f} ± {stats.std:.1f}")
    print(f"agreement on the student's states: {100 * comparison.agreement:.0f}%")


if __name__ == "__main__":
    main()
