"""Distil a CartPole-v1 teacher with one training run spread over worker processes.

``tf.distribute.MultiWorkerMirroredStrategy``: every worker holds a copy of
the student, computes gradients on its part of each global batch, and an
all-reduce sums them, so all copies take the same step. Here the workers are
processes on 127.0.0.1; on several machines, run the ``--worker`` command
below on each, with its own ``TF_CONFIG`` (docs/scaling.md).

1. The teacher: the fixed linear controller of rl_distill_cartpole.py (no
   training). It acts ε-greedily (ε = 0.3, so the data also holds states off
   its own path) for ``--steps`` env steps; the states and its logits are the
   dataset, saved as ``OUT/buffer.npz``.
2. The script starts ``--workers`` copies of itself with ``--worker``, each
   with a ``TF_CONFIG`` naming the cluster and its index in it. Each reads the
   same buffer, shuffles it with the same seed, builds the student and
   ``tfkd.Distiller`` inside ``strategy.scope()`` and fits on its part of
   every global batch (auto-sharding by DATA). The chief (worker 0) alone
   saves ``OUT/student.keras``.
3. Teacher, student and the uniform-random policy on held-out episodes (mean
   ± std, 95% CI, normalised score); ``OUT/results.json``.

    python examples/multi_worker.py                 # two local workers
    python examples/multi_worker.py --smoke         # seconds
    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py --worker --out SHARED_FOLDER   # on each machine
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--workers", type=int, default=2,
                    help="local worker processes to start (default: %(default)s)")
parser.add_argument("--steps", type=int, default=20_000,
                    help="env steps of the teacher, each a labelled state (default: %(default)s)")
parser.add_argument("--global-batch", type=int, default=256,
                    help="examples per step over all workers together (default: %(default)s)")
parser.add_argument("--epochs", type=int, default=10,
                    help="epochs over the buffer (default: %(default)s)")
parser.add_argument("--episodes", type=int, default=100,
                    help="held-out episodes of the final comparison (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to (default: runs/multi_worker, "
                         "runs/multi_worker-smoke with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets (checks that everything runs)")
parser.add_argument("--worker", action="store_true",
                    help="run as one worker of the cluster in TF_CONFIG: train on "
                         "OUT/buffer.npz; the chief writes OUT/student.keras")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/multi_worker" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.steps, args.epochs, args.episodes = 2_000, 1, 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ENV_ID = "CartPole-v1"
BUFFER = os.path.join(out, "buffer.npz")
STUDENT = os.path.join(out, "student.keras")


def train_worker():
    """One worker: the same program on every worker, the chief alone writes."""
    import tensorflow as tf

    # First, before any other TensorFlow call: it reads TF_CONFIG and joins the cluster.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    import tfkd
    from tfkd import rl

    chief = json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0
    rl.seed_everything(args.seed)
    observations, teacher_outputs = rl.load_npz(BUFFER, observation_shape=(4,), num_actions=2)
    # The same shuffled global batches on every worker (same data, same seed);
    # DATA sharding gives each worker its part of each of them.
    data = rl.to_tf_dataset(observations, teacher_outputs, batch_size=args.global_batch,
                            seed=args.seed)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = data.with_options(options)
    with strategy.scope():  # variables made here are mirrored, their initial values the chief's
        student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
        distiller = tfkd.Distiller(student, distillation_loss=tfkd.losses.QValueKL(0.01))
        distiller.compile(optimizer=keras.optimizers.Adam(3e-3))
    start = time.perf_counter()
    history = distiller.fit(data, epochs=args.epochs, verbose=0).history
    if chief:
        print(f"{strategy.num_replicas_in_sync} workers, {len(observations):,} states, global "
              f"batch {args.global_batch}: {args.epochs} epochs in "
              f"{time.perf_counter() - start:.1f} s; loss {history['loss'][0]:.3f} -> "
              f"{history['loss'][-1]:.3f}, agreement with the teacher "
              f"{100 * history['agreement'][-1]:.1f}%")
        student.save(STUDENT)


def start_local_cluster():
    """Runs this script with --worker in ``args.workers`` processes on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(args.workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))  # free ports, chosen by the OS
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    command = [sys.executable, __file__, "--worker", "--out", out, "--seed", str(args.seed),
               "--epochs", str(args.epochs), "--global-batch", str(args.global_batch)]
    workers = [subprocess.Popen(command, env={**os.environ, "TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(args.workers)]
    try:
        # A worker waits for its peers; one that fails leaves the others waiting.
        while any(w.poll() is None for w in workers):
            if any(w.poll() for w in workers):
                raise SystemExit(f"a worker failed (exit codes {[w.poll() for w in workers]})")
            time.sleep(0.2)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait()
    if any(w.returncode for w in workers):
        raise SystemExit(f"a worker failed (exit codes {[w.returncode for w in workers]})")


if args.worker:
    train_worker()
    raise SystemExit(0)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfkd  # noqa: E402
from tfkd import rl  # noqa: E402

os.makedirs(out, exist_ok=True)
rl.seed_everything(args.seed)

# 1. The teacher and its dataset. Push the cart the way the pole falls:
# weights on (x, x_dot, theta, theta_dot).
controller = np.array([0.1, 0.5, 1.0, 0.5], np.float32)
inputs = keras.Input((4,))
logits = keras.layers.Dense(2, use_bias=False, name="logits")
teacher = keras.Model(inputs, logits(inputs), name="linear_teacher")
logits.set_weights([10.0 * np.stack([-controller, controller], axis=1)])
collector = rl.RolloutCollector(rl.make_vector_env(ENV_ID, num_envs=8), teacher, seed=args.seed)
rollout = collector.collect(rl.EpsilonGreedyPolicy(rl.GreedyPolicy(teacher), 2, epsilon=0.3),
                            args.steps)
rl.save_npz(BUFFER, rollout.observations, rollout.teacher_outputs)

# 2. Training on the cluster.
start_local_cluster()
student = keras.saving.load_model(STUDENT)

# 3. Teacher, student and random on held-out episodes.
teacher_params = tfkd.models.count_params(teacher)
student_params = tfkd.models.count_params(student)
print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
      f"({student_params / teacher_params:.0f} times the teacher's)")
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
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"env": ENV_ID, "seed": args.seed, "workers": args.workers,
               "global_batch": args.global_batch, **record}, f, indent=1, allow_nan=False)
print(f"results, buffer and student: {out}")
