"""Offline distillation from a saved ``.npz`` dataset (Rusu et al. 2016).

A distillation dataset is two arrays: observations and the teacher's outputs
for them. This script makes one from the replay memory of a TF-Agents DQN
teacher — every state the teacher stored while it trained, labelled by the
final teacher (``tfkd.agents.replay_buffer_arrays``) — saves it with
``tfkd.rl.save_npz``, and then, as a separate offline step, loads it (no
pickle) and fits a small student on it with ``tfkd.Distiller``; no
environment is touched until the student is evaluated.

    python examples/offline_npz.py                        # makes cartpole_teacher.npz
    python examples/offline_npz.py --dataset cartpole_teacher.npz   # reuses it
    TFKD_EXAMPLE_TINY=1 python examples/offline_npz.py    # smoke test
"""

import argparse
import dataclasses
import os

# TF-Agents (used only to make the dataset) needs tf.keras = Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfkd  # noqa: E402
from tfkd import rl  # noqa: E402

ENV_ID = "CartPole-v1"


def make_dataset(path, tiny):
    """Trains a TF-Agents DQN teacher and saves its labelled replay memory."""
    from tfkd import agents

    config = agents.DQNConfig(
        env_id=ENV_ID, total_env_steps=51_000, train_every=16, gradient_steps=8, batch_size=128,
        epsilon_final=0.02, eval_every=2_500, eval_episodes=5, target_return=490)
    if tiny:
        config = dataclasses.replace(config, hidden_units=(32,), total_env_steps=300,
                                     learning_starts=100, eval_every=200, eval_episodes=1,
                                     target_return=None, progress=False)
    trained = agents.train_dqn_teacher(config)
    observations, teacher_outputs = agents.replay_buffer_arrays(trained.replay_buffer,
                                                                trained.teacher)
    rl.save_npz(path, observations, teacher_outputs)
    print(f"saved {len(observations):,} labelled states to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cartpole_teacher.npz")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--tiny", action="store_true",
                        default=bool(os.environ.get("TFKD_EXAMPLE_TINY")),
                        help="a few hundred steps only (a smoke test)")
    args = parser.parse_args()
    epochs, episodes = (1, 2) if args.tiny else (args.epochs, args.episodes)

    if not os.path.exists(args.dataset):
        make_dataset(args.dataset, args.tiny)

    # The offline part: the dataset file is all the student sees.
    observations, teacher_outputs = rl.load_npz(args.dataset, observation_shape=(4,),
                                                num_actions=2)
    dataset = rl.to_tf_dataset(observations, teacher_outputs, batch_size=64, seed=0)
    student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
    distiller = tfkd.Distiller(student, teacher=None,
                               distillation_loss=tfkd.losses.QValueKL(temperature=0.01))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = distiller.fit(dataset, epochs=epochs, verbose=0 if args.tiny else 2)
    print(f"agreement with the teacher on its own states: "
          f"{100 * history.history['agreement'][-1]:.1f}%")

    stats = rl.evaluate_policy(ENV_ID, student, num_episodes=episodes, seed=10_000)
    print(f"student ({tfkd.models.count_params(student):,} parameters): "
          f"return {stats.mean:.1f} ± {stats.std:.1f}")


if __name__ == "__main__":
    main()
