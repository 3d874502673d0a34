"""Distil a DQN teacher into a 15x smaller student on CartPole-v1, read top to bottom.

1. Train a DQN teacher (Keras 3) — or load it from results/teachers/.
2. Distil it student-driven (DAgger): the student acts, the teacher labels the
   states it visits (Ross et al. 2011; Czarnecki et al. 2019).
3. Compare student and teacher on 100 seeded episodes; plot the learning curve.

    python examples/rl_distill_cartpole.py   # ~2 min with a cached teacher, ~12 more without
"""

import os

import keras

import tfkd
from tfkd import rl

ENV_ID = "CartPole-v1"
TEACHER_PATH = "results/teachers/CartPole-v1.keras"  # shared with benchmarks/rl.py

# 1. Teacher: a 256x256 Q-network trained with double DQN.
if os.path.exists(TEACHER_PATH):
    teacher = keras.models.load_model(TEACHER_PATH)
else:
    teacher = tfkd.models.build_mlp((4,), 2, hidden_units=(256, 256), name="teacher")
    rl.train_dqn(teacher, rl.DQNConfig(
        env_id=ENV_ID, total_env_steps=50_000, num_envs=8, learning_rate=2.3e-3,
        buffer_capacity=100_000, train_every=256, gradient_steps=128, target_update_every=10,
        epsilon_fraction=0.16, epsilon_final=0.04, eval_every=5_000,
    ))
    os.makedirs(os.path.dirname(TEACHER_PATH), exist_ok=True)
    teacher.save(TEACHER_PATH)

# 2. Student-driven distillation into a 64x64 student (4,610 parameters, 1/15 of the teacher).
student = tfkd.models.build_mlp((4,), 2, hidden_units=(64, 64), name="student")
history = rl.distill_student_driven(teacher, student, rl.DistillConfig(
    env_id=ENV_ID,
    total_env_steps=5_000,           # env steps the teacher labels
    steps_per_round=1_000,
    train_steps_per_round=2_000,
    batch_size=128,
    distillation_loss="q_value_kl",  # KL to softmax(Q / 0.01) (Rusu et al. 2016)
    beta_decay=0.5,                  # teacher acts w.p. 1, 0.5, 0.25, ...
    eval_episodes=20,                # selection episodes: rl.evaluation.selection_seeds(seed, 20)
    keep_best=True,
))

# 3. Evaluate on seeds the training never saw.
comparison = rl.compare_policies(ENV_ID, teacher, student, num_episodes=100, seed=10_000)
for key, value in comparison.summary().items():
    print(f"{key:>22}: {value:.4g}")
rl.plot_history({"student-driven": history}, "distill_cartpole.png", title=ENV_ID)
print("learning curve: distill_cartpole.png")
