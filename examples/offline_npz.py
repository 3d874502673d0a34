"""Offline distillation from a saved ``.npz`` dataset (Rusu et al. 2016).

A distillation dataset is two arrays: observations and the teacher's outputs
for them. This script makes one from the replay memory of a TF-Agents DQN
teacher on CartPole-v1 — every state the teacher stored while it trained,
labelled by the final teacher (``tfkd.agents.replay_buffer_arrays``) — and
saves it with ``tfkd.rl.save_npz`` as ``OUT/dataset.npz``, the teacher as
``OUT/teacher``. Then, as a separate offline step, it loads the dataset (no
pickle) and fits a (32,) MLP student (226 parameters) on it with
``tfkd.Distiller``; no environment is touched until the student is compared
with its teacher and the uniform-random policy on held-out episodes (mean ±
std, 95% CI, normalised score). A second run with the same ``--out`` reuses
the dataset and teacher instead of training again.

    python examples/offline_npz.py                  # about 5 minutes on 2 cores, then seconds
    python examples/offline_npz.py --dataset d.npz --teacher TEACHER_DIR   # your own dataset
    python examples/offline_npz.py --smoke          # seconds
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default=None,
                    help="an existing .npz dataset of CartPole-v1 observations and teacher "
                         "outputs (default: OUT/dataset.npz, made first if missing)")
parser.add_argument("--teacher", default=None,
                    help="the TF-Agents teacher folder that labelled --dataset, for the final "
                         "comparison (default: OUT/teacher)")
parser.add_argument("--teacher-steps", type=int, default=51_000,
                    help="env steps of TF-Agents DQN training when the dataset is made"
                         " (default: %(default)s)")
parser.add_argument("--epochs", type=int, default=20,
                    help="epochs of the student over the data (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=20,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to (default: runs/offline_npz, "
                         "runs/offline_npz-smoke with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets (checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/offline_npz" + ("-smoke" if args.smoke else ""))
dataset_path = args.dataset or os.path.join(out, "dataset.npz")
teacher_dir = args.teacher or os.path.join(out, "teacher")
if args.dataset and not os.path.isfile(args.dataset):
    parser.error(f"--dataset {args.dataset}: no such file")
if args.dataset and not os.path.isdir(teacher_dir):
    parser.error(f"--dataset needs the folder of the teacher that labelled it: "
                 f"--teacher DIR ({teacher_dir} is not a folder)")
if args.smoke:
    args.teacher_steps, args.epochs, args.episodes = 300, 1, 2
# TF-Agents (to make the dataset and load its teacher) needs tf.keras = Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402

ENV_ID = "CartPole-v1"
os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)  # before any model is built

# 1. Make the dataset: a TF-Agents DQN teacher's replay memory, labelled by the teacher.
if not os.path.isfile(dataset_path):
    config = agents.DQNConfig(
        env_id=ENV_ID, hidden_units=(256, 256), total_env_steps=args.teacher_steps,
        learning_starts=100 if args.smoke else 1_000, train_every=16, gradient_steps=8,
        batch_size=128, epsilon_final=0.02, eval_every=200 if args.smoke else 2_500,
        eval_episodes=1 if args.smoke else 5, target_return=None if args.smoke else 490,
        seed=args.seed, progress=not args.smoke)
    trained = agents.train_dqn_teacher(config)
    agents.save_dqn_teacher(trained, config, teacher_dir, save_policy=False)
    observations, teacher_outputs = agents.replay_buffer_arrays(trained.replay_buffer,
                                                                trained.teacher)
    rl.save_npz(dataset_path, observations, teacher_outputs)
    print(f"saved {len(observations):,} labelled states to {dataset_path}, "
          f"the teacher to {teacher_dir}")

# 2. The offline part: the dataset file is all the student sees.
observations, teacher_outputs = rl.load_npz(dataset_path, observation_shape=(4,), num_actions=2)
dataset = rl.to_tf_dataset(observations, teacher_outputs, batch_size=64, seed=args.seed)
student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
distiller = tfkd.Distiller(student, teacher=None,
                           distillation_loss=tfkd.losses.QValueKL(temperature=0.01))
distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
history = distiller.fit(dataset, epochs=args.epochs, verbose=0 if args.smoke else 2)
print(f"{len(observations):,} labelled states; agreement with the teacher on them after "
      f"training: {100 * history.history['agreement'][-1]:.1f}%")
student.save(os.path.join(out, "student.keras"))

# 3. Teacher, student and random on held-out episodes.
teacher = agents.load_dqn_teacher(teacher_dir)
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
      f"(1/{teacher_params / student_params:.0f} of the teacher's)")
comparison = rl.compare_policies(ENV_ID, teacher, student,
                                 rl.held_out_seeds(args.seed, args.episodes))
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
    json.dump({"env": ENV_ID, "seed": args.seed, "dataset": dataset_path, **record}, f,
              indent=1, allow_nan=False)
print(f"results and student: {out}")
