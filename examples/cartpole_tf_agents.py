"""CartPole-v1: a TF-Agents DQN teacher distilled into a tiny Keras 3 student.

1. Train a double-DQN teacher with TF-Agents (``tfkd.agents.train_dqn_teacher``:
   a (256, 256) QNetwork with 67,586 parameters, replay buffer, driver, target
   network).
2. Distil it student-driven (DAgger: the student acts, the teacher labels the
   states it visits; Ross et al. 2011, Czarnecki et al. 2019) into an MLP
   with one hidden layer of 32 units: 226 parameters, 1/299 of the teacher.
3. Evaluate: the student through TF-Agents' own driver and metric
   (``tfkd.agents.StudentPolicy``), then teacher, student and the
   uniform-random policy side by side with ``tfkd.rl.compare_policies`` on
   held-out episodes (mean ± std, 95% CI, normalised score).
   ``results.json`` and ``student.keras`` go under ``--out``.

    python examples/cartpole_tf_agents.py           # about 5 minutes on 2 cores
    python examples/cartpole_tf_agents.py --smoke   # seconds
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--teacher-steps", type=int, default=51_000,
                    help="env steps of TF-Agents DQN training (1,000 of random play included)"
                         " (default: %(default)s)")
parser.add_argument("--distill-steps", type=int, default=20_000,
                    help="env steps of student-driven distillation (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=20,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to (default: runs/cartpole_tf_agents, "
                         "runs/cartpole_tf_agents-smoke with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets (checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/cartpole_tf_agents" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.teacher_steps, args.distill_steps, args.episodes = 300, 200, 2
# TF-Agents needs tf.keras = Keras 2; this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfkd  # noqa: E402
from tfkd import agents, rl  # noqa: E402

ENV_ID = "CartPole-v1"
os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)  # before any model is built

# 1. A TF-Agents double-DQN teacher (train_dqn_teacher seeds its own network with config.seed).
teacher_config = agents.DQNConfig(
    env_id=ENV_ID, hidden_units=(256, 256), total_env_steps=args.teacher_steps,
    learning_starts=100 if args.smoke else 1_000, train_every=16, gradient_steps=8,
    batch_size=128, epsilon_final=0.02, eval_every=200 if args.smoke else 2_500,
    eval_episodes=1 if args.smoke else 5, target_return=None if args.smoke else 490,
    seed=args.seed, progress=not args.smoke)
trained = agents.train_dqn_teacher(teacher_config)
teacher = trained.teacher  # observations -> Q-values; a frozen tf_keras network

# 2. Student-driven distillation into a (32,) MLP.
student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
      f"(1/{teacher_params / student_params:.0f} of the teacher's)")
rl.distill_student_driven(teacher, student, rl.DistillConfig(
    env_id=ENV_ID, total_env_steps=args.distill_steps,
    steps_per_round=100 if args.smoke else 2_000,
    train_steps_per_round=10 if args.smoke else 500,
    eval_episodes=1 if args.smoke else 5, target_return=None if args.smoke else 490,
    seed=args.seed, progress=not args.smoke))
student.save(os.path.join(out, "student.keras"))

# 3a. The Keras 3 student as a TF-Agents policy, run by a TF-Agents driver.
eval_seeds = rl.held_out_seeds(args.seed, args.episodes)
env = agents.GymnasiumEnvironment(ENV_ID, seed=eval_seeds[0])
policy = agents.StudentPolicy(student, env.time_step_spec(), env.action_spec())
stats = agents.evaluate_policy(policy, env, num_episodes=args.episodes)
print(f"student as a TF-Agents policy: return {stats.mean:.1f} ± {stats.std:.1f} "
      f"over {stats.num_episodes} episodes")

# 3b. Teacher, student and random on the same held-out episodes.
comparison = rl.compare_policies(ENV_ID, teacher, student, eval_seeds)
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
print(f"results and student: {out}")
