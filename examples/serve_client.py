"""Play gymnasium episodes through the HTTP policy service (``tfkd serve``).

1. The model. ``--url`` plays against a service that already runs;
   ``--model DIR`` starts ``tfkd serve --model DIR`` on a free loopback port
   for the length of the run. Without either, the script makes its own: it
   distils CartPole-v1's fixed linear controller (8 weights, logits
   10·[-w·s, w·s]; the teacher of ``examples/rl_distill_cartpole.py``) into a
   (32,) student student-driven (DAgger), exports the student to TFLite
   (``OUT/export``: ``student.keras``, ``student.tflite`` and ``export.json``, the layout of
   ``tfkd.deploy``) and serves that.
2. Each step of the held-out episodes, the observations of the parallel
   environments go to ``POST /v1/act`` in one request; the actions that come
   back are played.
3. The served student, the teacher (run locally, when the script made the
   student) and the uniform-random policy on the same held-out episodes:
   mean ± std, 95% CI, normalised score; request latency as the client saw
   it. ``results.json`` and ``student.keras`` go under ``--out``.

    python examples/serve_client.py                       # 1.5 minutes on 2 busy cores
    python examples/serve_client.py --model runs/export   # an export folder of `tfkd export`
    python examples/serve_client.py --url http://127.0.0.1:8000 --env CartPole-v1
    python examples/serve_client.py --smoke               # seconds
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
source = parser.add_mutually_exclusive_group()
source.add_argument("--model", default=None,
                    help="export folder to serve for the run (default: distil and export a "
                         "CartPole student under OUT/export)")
source.add_argument("--url", default=None,
                    help="a running tfkd serve to play against, e.g. http://127.0.0.1:8000")
parser.add_argument("--env", default=None,
                    help="gymnasium id (default: export.json's env_id, or CartPole-v1)")
parser.add_argument("--steps", type=int, default=3_000,
                    help="env steps of distillation when the script makes the student "
                         "(default: %(default)s)")
parser.add_argument("--episodes", type=int, default=20,
                    help="held-out episodes played through the service (default: %(default)s)")
parser.add_argument("--seed", type=int, default=0,
                    help="fixes everything random in the run (default: %(default)s)")
parser.add_argument("--out", default=None,
                    help="the only folder written to (default: runs/serve_client, "
                         "runs/serve_client-smoke with --smoke)")
parser.add_argument("--smoke", action="store_true",
                    help="a seconds-long run on tiny budgets (checks that everything runs)")
args = parser.parse_args()  # before the heavy imports: --help runs nothing
out = args.out or ("runs/serve_client" + ("-smoke" if args.smoke else ""))
if args.smoke:
    args.steps, args.episodes = 200, 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from tfkd import rl  # noqa: E402

os.makedirs(out, exist_ok=True)


class ServedPolicy(rl.Policy):
    """A policy whose actions come from ``POST /v1/act``; counts requests and latency."""

    def __init__(self, url: str):
        self.client = httpx.Client(base_url=url, timeout=30.0)
        self.latencies, self.version = [], None

    def __call__(self, observations, rng):
        start = time.perf_counter()
        response = self.client.post("/v1/act", json={
            "observations": np.asarray(observations, np.float32).tolist()})
        self.latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            sys.exit(f"the service answered {response.status_code}: {response.text}")
        answer = response.json()
        self.version = answer["model_version"]
        return np.asarray(answer["actions"], np.int64)


@contextlib.contextmanager
def serving(model_dir: str):
    """``tfkd serve --model model_dir`` on a free loopback port; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tfkd.cli", "serve", "--model", model_dir,
                               "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("tfkd serve did not start")
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: answers what is in flight, exits 0
        server.wait(timeout=60)


teacher = None
if args.url is None and args.model is None:
    # 1. Distil the linear controller into a small student and export it.
    import keras

    import tfkd
    from tfkd.deploy.exporter import write_serving_files

    rl.seed_everything(args.seed)
    controller = np.array([0.1, 0.5, 1.0, 0.5], np.float32)
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(2, use_bias=False, name="logits")
    teacher = keras.Model(inputs, logits(inputs), name="linear_teacher")
    logits.set_weights([10.0 * np.stack([-controller, controller], axis=1)])
    student = tfkd.models.build_mlp((4,), 2, hidden_units=(32,), name="student")
    teacher_params = tfkd.models.count_params(teacher)
    student_params = tfkd.models.count_params(student)
    print(f"teacher: {teacher_params:,} parameters; student: {student_params:,} "
          f"({student_params / teacher_params:.0f} times the teacher's: a linear controller "
          "is as small as a policy gets)")
    rl.distill_student_driven(teacher, student, rl.DistillConfig(
        env_id="CartPole-v1", total_env_steps=args.steps,
        steps_per_round=100 if args.smoke else 1_000,
        train_steps_per_round=10 if args.smoke else 1_000, batch_size=128,
        distillation_loss="q_value_kl", beta_decay=0.5, eval_episodes=2 if args.smoke else 10,
        keep_best=True, seed=args.seed, progress=not args.smoke))
    student.save(os.path.join(out, "student.keras"))
    # The files `tfkd serve` loads, unmeasured; `tfkd export` also measures each artefact.
    args.model = write_serving_files(student, "CartPole-v1", os.path.join(out, "export"),
                                     savedmodel=False)

env_id = args.env
if env_id is None and args.model and os.path.isfile(os.path.join(args.model, "export.json")):
    with open(os.path.join(args.model, "export.json")) as f:
        env_id = json.load(f).get("env_id")
env_id = env_id or "CartPole-v1"

# 2. Held-out episodes, every action from the service.
seeds = rl.held_out_seeds(args.seed, args.episodes)
with (serving(args.model) if args.url is None else contextlib.nullcontext(args.url)) as url:
    served = ServedPolicy(url)
    student_stats = rl.evaluate_policy(env_id, served, seeds)
num_actions = int(gym.make(env_id).action_space.n)
random_stats = rl.evaluate_policy(env_id, rl.random_policy(num_actions), seeds)
teacher_stats = rl.evaluate_policy(env_id, teacher, seeds) if teacher is not None else None

# 3. The protocol's report.
print(f"returns on {args.episodes} held-out episodes of {env_id} (mean ± std, 95% CI; "
      "normalised score: 0 = random, 1 = teacher); the student's actions came over HTTP, "
      f"model version {served.version}")
record = {"env": env_id, "seed": args.seed, "episodes": args.episodes, "eval_seeds": seeds,
          "model_version": served.version}
for name, stats in (("teacher", teacher_stats), ("student", student_stats),
                    ("random", random_stats)):
    if stats is None:
        continue
    score = (rl.normalized_score(stats.mean, random_stats.mean, teacher_stats.mean)
             if teacher_stats is not None else None)
    print(f"{name}: return {stats.mean:.1f} ± {stats.std:.1f} (95% CI {stats.ci95[0]:.1f} to "
          f"{stats.ci95[1]:.1f}), normalised score "
          f"{'undefined' if score is None else f'{score:.2f}'}")
    record[name] = {**stats.as_dict(), "normalized_score": score}
latency_ms = 1e3 * np.asarray(served.latencies)
print(f"{len(latency_ms)} requests, latency p50 {np.percentile(latency_ms, 50):.2f} ms, "
      f"p99 {np.percentile(latency_ms, 99):.2f} ms (one client, one request per step)")
record["requests"] = {"count": len(latency_ms), "p50_ms": float(np.percentile(latency_ms, 50)),
                      "p99_ms": float(np.percentile(latency_ms, 99))}
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(record, f, indent=1, allow_nan=False)
print(f"results: {out}")
