"""tfkd's RL losses inside Keras' own ``keras.distillation.Distiller``.

Keras 3 ships a generic distiller (``keras.distillation``). Its
``LogitsDistillation`` takes the KL of raw logits; for a DQN teacher one
wants the KL of the *sharpened* Q-value distribution softmax(q / tau) of
Policy Distillation (Rusu et al. 2016). ``tfkd.KerasDistillationLoss`` plugs
any tfkd loss into Keras' distiller:

1. train a Keras 3 DQN teacher, a (256, 256) MLP with 67,586 parameters
   (``tfkd.rl.train_dqn``), on CartPole-v1;
2. collect the states it visits, epsilon-greedy (``tfkd.rl.RolloutCollector``);
3. fit a (32,) MLP student with 226 parameters (1/299 of the teacher) with
   ``keras.distillation.Distiller`` and ``tfkd.losses.QValueKL`` (plus a
   little cross-entropy on the teacher's greedy actions);
4. compare teacher, student and the uniform-random policy on held-out
   episodes: mean ± std, 95% CI, normalised score. ``results.json`` and
   ``student.keras`` go under ``--out``.

    python examples/keras_distiller.py           # a few minutes on 2 cores
    python examples/keras_distiller.py --smoke   # seconds
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--teacher-steps", type=int, default=50_000,
                    help="env steps of DQN training for the teacher (default: %(default)s)")
parser.add_argument("--dataset-steps", type=int, default=20_000,
                    help="env steps of teacher play collected for distillation"
                         " (default: %(default)s)")
parser.add_argument("--epochs", type=int, default=10,
                    help="epochs of the student over the data (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=20,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to (default: runs/keras_distiller, "
                         "runs/keras_distiller-smoke with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets (checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/keras_distiller" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.teacher_steps, args.dataset_steps, args.epochs, args.episodes = 400, 200, 1, 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfkd  # noqa: E402
from tfkd import rl  # noqa: E402

ENV_ID = "CartPole-v1"
os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)  # before any model is built

# 1. A Keras 3 DQN teacher.
teacher = tfkd.models.build_mlp((4,), 2, hidden_units=(256, 256), name="teacher")
rl.train_dqn(teacher, rl.DQNConfig(
    env_id=ENV_ID, hidden_units=(256, 256), total_env_steps=args.teacher_steps,
    learning_starts=min(1_000, args.teacher_steps // 2),
    eval_every=max(1, args.teacher_steps // 5), eval_episodes=2 if args.smoke else 5,
    seed=args.seed, progress=not args.smoke))

# 2. The states the teacher visits, epsilon-greedy, with its Q-values.
env = rl.make_vector_env(ENV_ID, num_envs=8)
collector = rl.RolloutCollector(env, teacher, seed=args.seed)
explore = rl.EpsilonGreedyPolicy(rl.GreedyPolicy(teacher), num_actions=2, epsilon=0.1)
rollout = collector.collect(explore, args.dataset_steps)
env.close()
teacher_actions = np.argmax(rollout.teacher_outputs, axis=-1)

# 3. Keras' distiller with a tfkd loss.
student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
      f"(1/{teacher_params / student_params:.0f} of the teacher's)")
distiller = keras.distillation.Distiller(
    teacher=teacher, student=student,
    distillation_losses=tfkd.KerasDistillationLoss(tfkd.losses.QValueKL(temperature=0.01)),
    student_loss_weight=0.1)
distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
distiller.fit(rollout.observations, teacher_actions, batch_size=64, epochs=args.epochs,
              verbose=0 if args.smoke else 2)
student.save(os.path.join(out, "student.keras"))

# 4. Held-out episodes: seeds that neither training nor selection used.
comparison = rl.compare_policies(ENV_ID, teacher, student, rl.held_out_seeds(args.seed,
                                                                              args.episodes))
print(f"returns on {args.episodes} held-out episodes (mean ± std, 95% CI; normalised score: "
      "0 = random, 1 = teacher)")
record = comparison.as_dict()
for name in ("teacher", "student", "random"):
    row = record[name]
    score = "undefined" if row["normalized_score"] is None else f"{row['normalized_score']:.2f}"
    print(f"{name}: return {row['mean_return']:.1f} ± {row['std_return']:.1f} "
          f"(95% CI {row['ci95'][0]:.1f} to {row['ci95'][1]:.1f}), normalised score {score}")
print(f"agreement with the teacher on the student's states: {100 * comparison.agreement:.1f}%")
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"env": ENV_ID, "seed": args.seed, **record}, f, indent=1,
              allow_nan=False)
print(f"results and student: {out}")
