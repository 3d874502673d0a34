"""Distil a CartPole-v1 teacher into a small student, student-driven (DAgger).

1. The teacher. By default a fixed linear controller (8 weights, logits
   10·[-w·s, w·s]) that balances the pole for the full 500 steps: it needs no
   training, so the script runs in about a minute. ``--teacher PATH`` loads a
   saved teacher instead: a ``.keras`` file, or a teacher folder written by
   ``tfkd train-teacher`` (either backend) or by ``--train-teacher``, which
   trains a (256, 256) double-DQN teacher (67,586 parameters, about 12
   minutes on 2 cores) and saves it under ``OUT/teacher``.
2. Distil it student-driven (DAgger): the student acts, the teacher labels the
   states it visits (Ross et al. 2011; Czarnecki et al. 2019). The student is a
   (64, 64) MLP with 4,610 parameters, about 1/15 of the trained teacher.
3. Compare teacher, student and the uniform-random policy on held-out
   episodes (seeds the training never saw): mean ± std, 95% CI, normalised
   score; write ``results.json``, ``student.keras`` and the learning curve
   ``learning_curve.png`` under ``--out``.

    python examples/rl_distill_cartpole.py                     # about a minute
    python examples/rl_distill_cartpole.py --train-teacher     # about 15 minutes
    python examples/rl_distill_cartpole.py --teacher runs/rl_distill_cartpole/teacher
    python examples/rl_distill_cartpole.py --smoke             # seconds
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--teacher", default=None,
                    help="a saved teacher: a .keras file, or a teacher folder of `tfkd "
                         "train-teacher` or --train-teacher (default: the fixed linear "
                         "controller)")
parser.add_argument("--train-teacher", action="store_true",
                    help="train a (256, 256) DQN teacher first (about 12 minutes) and save it "
                         "under OUT/teacher")
parser.add_argument("--steps", type=int, default=5_000,
                    help="env steps of distillation (labelled by the teacher)"
                         " (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=100,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to (default: runs/rl_distill_cartpole, "
                         "runs/rl_distill_cartpole-smoke with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets (checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
if args.teacher and args.train_teacher:
    parser.error("give --teacher or --train-teacher, not both")
out = args.out or ("runs/rl_distill_cartpole" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.steps, args.episodes = 200, 2
teacher_backend = None  # of a teacher folder: "keras" or "tf-agents" (see its teacher.json)
if args.teacher and os.path.isdir(args.teacher):
    with open(os.path.join(args.teacher, "teacher.json")) as f:
        teacher_backend = json.load(f)["backend"]
if teacher_backend == "tf-agents":
    # TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfkd  # noqa: E402
from tfkd import rl  # noqa: E402

ENV_ID = "CartPole-v1"
os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)  # before any model is built

# 1. The teacher.
if args.teacher is None and not args.train_teacher:
    # Push the cart the way the pole falls: weights on (x, x_dot, theta, theta_dot).
    controller = np.array([0.1, 0.5, 1.0, 0.5], np.float32)
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(2, use_bias=False, name="logits")
    teacher = keras.Model(inputs, logits(inputs), name="linear_teacher")
    logits.set_weights([10.0 * np.stack([-controller, controller], axis=1)])
elif teacher_backend == "tf-agents":
    from tfkd import agents

    teacher = agents.load_dqn_teacher(args.teacher)
elif teacher_backend == "keras":
    teacher, _ = rl.dqn.load_dqn_teacher(args.teacher)
elif args.teacher is not None:
    teacher = keras.models.load_model(args.teacher)
else:
    teacher = tfkd.models.build_mlp((4,), 2, hidden_units=(256, 256), name="teacher")
    rl.train_dqn(teacher, rl.DQNConfig(
        env_id=ENV_ID, hidden_units=(256, 256), num_envs=8, learning_rate=2.3e-3,
        total_env_steps=300 if args.smoke else 50_000, learning_starts=100 if args.smoke else 1_000,
        buffer_capacity=100_000, train_every=256, gradient_steps=128, target_update_every=10,
        epsilon_fraction=0.16, epsilon_final=0.04, eval_every=5_000,
        eval_episodes=1 if args.smoke else 10, seed=args.seed, progress=not args.smoke,
    ), out_dir=os.path.join(out, "teacher"))

# 2. Student-driven distillation into a 64x64 student.
student = tfkd.models.build_mlp((4,), 2, hidden_units=(64, 64), name="student")
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
size = (f"1/{teacher_params / student_params:.1f} of" if student_params <= teacher_params
        else f"{student_params / teacher_params:.0f} times")
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} ({size} the teacher's)")
history = rl.distill_student_driven(teacher, student, rl.DistillConfig(
    env_id=ENV_ID,
    total_env_steps=args.steps,      # env steps the teacher labels
    steps_per_round=100 if args.smoke else 1_000,
    train_steps_per_round=10 if args.smoke else 2_000,
    batch_size=128,
    distillation_loss="q_value_kl",  # KL to softmax(Q / 0.01) (Rusu et al. 2016)
    beta_decay=0.5,                  # teacher acts w.p. 1, 0.5, 0.25, ...
    eval_episodes=2 if args.smoke else 20,  # on rl.selection_seeds(seed, n)
    keep_best=True,
    seed=args.seed,
    progress=not args.smoke,
))
student.save(os.path.join(out, "student.keras"))

# 3. Evaluate on held-out episodes: seeds disjoint from the selection episodes above.
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
    json.dump({"env": ENV_ID, "seed": args.seed, **record,
               "history": history.as_dict()}, f, indent=1, allow_nan=False)
rl.plot_history({"student-driven": history}, os.path.join(out, "learning_curve.png"),
                title=ENV_ID)
print(f"results, student and learning curve: {out}")
