"""LunarLander-v3 (gymnasium[box2d]): a TF-Agents DQN teacher, a 1/83-size student.

The lander has an 8-dimensional state and 4 discrete actions; a return of 200
counts as solved. The teacher is a double DQN with a (256, 256) QNetwork
(69,124 parameters) trained by TF-Agents (``tfkd.agents.train_dqn_teacher``);
the student, an MLP with one hidden layer of 64 units (836 parameters, 1/83
of the teacher), is distilled student-driven (DAgger; Ross et al. 2011) with
``tfkd.rl``. Teacher, student and the uniform-random policy are compared on
held-out episodes: mean ± std, 95% CI, normalised score (returns here can be
negative, so "% of the teacher" only makes sense normalised).

Both trainings checkpoint under ``OUT/checkpoints``: run the same command
again and it resumes. ``results.json`` and ``student.keras`` go under ``--out``.

    python examples/lunar_lander.py                         # tens of minutes on 2 cores
    python examples/lunar_lander.py --teacher-steps 300000  # a stronger teacher
    python examples/lunar_lander.py --smoke                 # seconds
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--teacher-steps", type=int, default=200_000,
                    help="env steps of TF-Agents DQN training, after 1,000 of random play"
                         " (default: %(default)s)")
parser.add_argument("--distill-steps", type=int, default=50_000,
                    help="env steps of student-driven distillation (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=20,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to, checkpoints included; rerun with the "
                         "same one to resume (default: runs/lunar_lander, runs/lunar_lander-smoke "
                         "with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets, episodes cut at 200 steps "
                         "(checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/lunar_lander" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.teacher_steps, args.distill_steps, args.episodes = 200, 200, 2
# TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402

ENV_ID = "LunarLander-v3"
os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)  # before any model is built

# 1. A TF-Agents double-DQN teacher (train_dqn_teacher seeds its own network with config.seed).
random_steps = 100 if args.smoke else 1_000
total_steps = random_steps + args.teacher_steps
trained = agents.train_dqn_teacher(agents.DQNConfig(
    env_id=ENV_ID, hidden_units=(256, 256), total_env_steps=total_steps,
    learning_starts=random_steps, buffer_capacity=100_000, learning_rate=5e-4,
    train_every=16, gradient_steps=8, batch_size=128, epsilon_final=0.02,
    epsilon_fraction=min(1.0, 50_000 / total_steps), eval_every=20_000,
    eval_episodes=1 if args.smoke else 5, target_return=None if args.smoke else 250,
    seed=args.seed, checkpoint_dir=os.path.join(out, "checkpoints", "teacher"),
    progress=not args.smoke))
teacher = trained.teacher
print(f"teacher: best return on the selection episodes during training "
      f"{trained.best_return:.1f}")

# 2. Student-driven distillation into a (64,) MLP.
student = tfkd.models.build_mlp((8,), 4, hidden_units=(64,), name="student")
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
      f"(1/{teacher_params / student_params:.0f} of the teacher's)")
rl.distill_student_driven(teacher, student, rl.DistillConfig(
    env_id=ENV_ID, total_env_steps=args.distill_steps,
    steps_per_round=100 if args.smoke else 5_000,
    train_steps_per_round=10 if args.smoke else 1_000,
    eval_episodes=1 if args.smoke else 5, seed=args.seed,
    checkpoint_dir=os.path.join(out, "checkpoints", "distill"), progress=not args.smoke))
student.save(os.path.join(out, "student.keras"))

# 3. Teacher, student and random on held-out episodes.
comparison = rl.compare_policies(ENV_ID, teacher, student,
                                 rl.held_out_seeds(args.seed, args.episodes),
                                 max_episode_steps=200 if args.smoke else None)
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
    json.dump({"env": ENV_ID, "seed": args.seed, **record}, f, indent=1, allow_nan=False)
print(f"results, student and checkpoints: {out}")
