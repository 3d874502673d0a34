"""Atari Pong (ale-py, ROMs included): Nature-CNN teacher, a 1/7.6-size CNN student.

The DQN recipe of Mnih et al. (2015): 84x84 grey frames, 4 stacked, frame
skip 4 (``tfkd.rl.make_atari_env``), and the Nature CNN. The teacher is a
TF-Agents double DQN whose QNetwork is the Nature CNN with a 512-unit dense
layer, 1,687,206 parameters (``tfkd.agents.train_dqn_teacher`` picks it for
``ALE/...`` ids); the student is ``tfkd.models.build_student`` for Atari, the
Nature CNN with half the filters and a 128-unit dense layer, 223,190
parameters (1/7.6 of the teacher: the convolutions shrink little, the dense
layer most), distilled student-driven. Teacher, student and the
uniform-random policy are compared on held-out episodes: mean ± std, 95% CI,
normalised score.

Training Pong to a winning teacher takes millions of frames — many hours on 2
CPU cores, so run it on a GPU. Both trainings checkpoint under
``OUT/checkpoints`` (the teacher's replay memory included): run the same
command again and it resumes. ``results.json`` and ``student.keras`` go
under ``--out``.

    python examples/atari_pong.py            # hours
    python examples/atari_pong.py --smoke    # seconds: a few steps, episodes cut at 400 frames
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--teacher-steps", type=int, default=2_000_000,
                    help="env steps of TF-Agents DQN training, after 20,000 of random play"
                         " (default: %(default)s)")
parser.add_argument("--distill-steps", type=int, default=200_000,
                    help="env steps of student-driven distillation (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=5,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to, checkpoints included; rerun with the "
                         "same one to resume (default: runs/atari_pong, runs/atari_pong-smoke "
                         "with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run: a few env steps, no selection, held-out episodes "
                         "cut at 400 frames (checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/atari_pong" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.teacher_steps, args.distill_steps, args.episodes = 16, 16, 2
# TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402

ENV_ID = "ALE/Pong-v5"
os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)  # before any model is built

# 1. The teacher: Mnih et al. 2015 / Dopamine settings, with a smaller replay
# memory (TF-Agents allocates it up front: 28 KB per stacked observation).
random_steps = 32 if args.smoke else 20_000
total_steps = random_steps + args.teacher_steps
trained = agents.train_dqn_teacher(agents.DQNConfig(
    env_id=ENV_ID, hidden_units=(512,), total_env_steps=total_steps,
    learning_starts=random_steps, buffer_capacity=64 if args.smoke else 100_000,
    batch_size=4 if args.smoke else 32, learning_rate=1e-4, gamma=0.99, train_every=4,
    gradient_steps=1, epsilon_final=0.01, epsilon_fraction=min(1.0, 250_000 / total_steps),
    target_update_every=8_000, eval_every=0 if args.smoke else 100_000,
    eval_episodes=0 if args.smoke else 3, seed=args.seed,
    checkpoint_dir=os.path.join(out, "checkpoints", "teacher"), progress=not args.smoke))
teacher = trained.teacher

# 2. Student-driven distillation into the small Nature CNN.
student = tfkd.models.build_student((84, 84, 4), 6, atari=True, name="student")
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
      f"(1/{teacher_params / student_params:.1f} of the teacher's)")
rl.distill_student_driven(teacher, student, rl.DistillConfig(
    env_id=ENV_ID, total_env_steps=args.distill_steps,
    steps_per_round=8 if args.smoke else 10_000,
    train_steps_per_round=2 if args.smoke else 2_000,
    buffer_capacity=64 if args.smoke else 100_000, batch_size=4 if args.smoke else 64,
    num_envs=2 if args.smoke else 4, eval_episodes=0 if args.smoke else 2, seed=args.seed,
    checkpoint_dir=os.path.join(out, "checkpoints", "distill"), progress=not args.smoke))
student.save(os.path.join(out, "student.keras"))

# 3. Teacher, student and random on held-out episodes.
comparison = rl.compare_policies(ENV_ID, teacher, student,
                                 rl.held_out_seeds(args.seed, args.episodes),
                                 max_episode_steps=400 if args.smoke else None)
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
