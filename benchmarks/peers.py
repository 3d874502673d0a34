"""tfkd against imitation: time to a student at its teacher's level, side by side.

For each environment (CartPole-v1, LunarLander-v3), on the cached DQN teacher
of ``benchmarks/rl.py`` (Keras MLP 256x256), its student size, env-step
budget, rounds, batch size and learning rate, each run seed runs five methods:

- tfkd student-driven: ``tfkd.rl.distill`` with ``control="student"`` (DAgger,
  β = 0.5^round), the sharpened Q-value KL;
- imitation DAgger: ``imitation.algorithms.dagger.SimpleDAggerTrainer`` with
  ``imitation.algorithms.bc.BC`` (β = 0.5^round, ``ExponentialBetaSchedule``);
- tfkd teacher-driven: ``tfkd.rl.distill`` with ``control="teacher"`` (ε = 0.05);
- imitation BC: BC on the teacher's rollouts of the whole budget;
- tfkd student-driven on 2 Ray workers (``DistillConfig(workers=2)``): the
  same run with collection and labelling on two Ray actors, the start of its
  local Ray cluster and actors inside its timed span.

imitation runs in its own virtual environment, which this script builds
(``--peer-venv``; every version pinned in ``peers_imitation_requirements.txt``), as its users run
it: ``benchmarks/peers_imitation.py``, a separate process with that venv's
Python. It gets the teacher's weights as plain arrays (``.npz``) and copies
them into the same PyTorch MLP (action: argmax Q); its student is a
stable-baselines3 policy with tfkd's student's hidden sizes.

Protocol, the same for all five methods:

- at the end of every round the student is evaluated greedily by tfkd's
  ``evaluate_policy`` on the seed's selection episodes
  (``selection_seeds(seed, 20)``), in this process, on the tfkd side's
  gymnasium; 100% is a normalised score of at least 1 there,
  ``(R − R_random) / (R_teacher − R_random)`` with teacher and random measured
  on the same episodes. The run stops the first time it gets there;
- wall time is training time: from the start of the run (building the envs
  and trainers, after imports and loading the teacher) to the end of that
  round, the evaluations and the export of the peer's weights left out. A
  run that never gets there reports the time and env steps of its whole budget;
- the final student (the one that got there, else the round with the best
  selection return) is evaluated on held-out episodes
  (``held_out_seeds(seed, episodes)``) with ``compare_policies``; the peer's
  student is rebuilt as the same Keras MLP from its exported weights.

The table gives, per method, medians over seeds with [min, max]; the ratios
are per seed, tfkd's wall time over imitation DAgger's (and teacher-driven
over BC), with their median.

Usage::

    python benchmarks/peers.py --threads 1                               # both envs, seeds 0-4
    python benchmarks/peers.py --env CartPole-v1 --seeds 0
    python benchmarks/peers.py --summarize                               # table of saved rows
    python benchmarks/peers.py --smoke --out /tmp/peers-smoke            # a check only

Each method of each seed is written to
``<out>/peers/<env>/seed-<s>/<method>.json`` as it finishes (a rerun reuses
rows saved with the same settings unless ``--fresh``); the summary goes to
``<out>/peers/<env>.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rl  # noqa: E402  (the RL benchmark: teachers, setups, statistics across seeds)

from tfkd.files import strict_json, write_json, write_npz  # noqa: E402
from tfkd.models import build_mlp, count_params  # noqa: E402
from tfkd.rl import (DistillConfig, ReturnStats, compare_policies, distill,  # noqa: E402
                     env_spec, evaluate_policy, held_out_seeds, make_env, normalized_score,
                     random_policy, seed_everything, selection_seeds)

FORMAT = "tfkd.benchmarks.peers/1"
TFKD_DAGGER, PEER_DAGGER = "tfkd student-driven", "imitation DAgger"
TFKD_TEACHER, PEER_BC = "tfkd teacher-driven", "imitation BC"
TFKD_RAY = "tfkd student-driven, 2 Ray workers"
# Run order: tfkd and imitation alternate, so a drift of the machine's speed hits both.
METHODS = (TFKD_DAGGER, PEER_DAGGER, TFKD_TEACHER, PEER_BC, TFKD_RAY)
TFKD_CONTROL = {TFKD_DAGGER: "student-driven", TFKD_TEACHER: "teacher-driven",
                TFKD_RAY: "student-driven"}
# Collection on Ray actors (tfkd.rl.workers): the run starts its local cluster
# and actors inside its timed span.
TFKD_WORKERS = {TFKD_RAY: 2}
PEER_METHOD = {PEER_DAGGER: "dagger", PEER_BC: "bc"}
RATIOS = ((TFKD_DAGGER, PEER_DAGGER), (TFKD_TEACHER, PEER_DAGGER), (TFKD_TEACHER, PEER_BC),
          (TFKD_RAY, PEER_DAGGER))

# imitation 1.0.1 pins gymnasium~=0.29 and stable-baselines3~=2.2.1; gymnasium 0.29
# has LunarLander-v2, which 1.0 renamed -v3 (same dynamics with default settings).
PEER_REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "peers_imitation_requirements.txt")
PEER_ENV_IDS = {"LunarLander-v3": "LunarLander-v2"}
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers_imitation.py")
DEFAULT_PEER_VENV = os.path.join(os.path.expanduser("~"), ".cache", "tfkd", "peers-venv")
MARK = "@@peers "  # protocol lines of peers_imitation.py
PROBE_ROWS = 256


# --------------------------------------------------------------- the peer venv


def peer_python(venv: str) -> str:
    """The peer venv's Python; the venv is built (or rebuilt for other pins) first if needed.

    The venv holds exactly :data:`PEER_REQUIREMENTS` (all versions pinned); a
    copy of that file inside it marks it as this benchmark's.
    """
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, "tfkd-peers-requirements.txt")
    with open(PEER_REQUIREMENTS, encoding="utf-8") as file:
        wanted = file.read()
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as file:
            if file.read() == wanted and os.access(python, os.X_OK):
                return python
        shutil.rmtree(venv)  # ours, with other pins
    elif os.path.exists(venv):
        sys.exit(f"error: {venv} exists but was not made by this benchmark; remove it or pass "
                 "another --peer-venv.")
    print(f"peer: creating {venv} from {os.path.basename(PEER_REQUIREMENTS)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", PEER_REQUIREMENTS], check=True)
    with open(marker, "w", encoding="utf-8") as file:
        file.write(wanted)
    print(f"peer: installed in {time.perf_counter() - start:.0f} s", flush=True)
    return python


# ------------------------------------------------------ weights as plain arrays


def export_mlp(model: keras.Model, path: str, probe: np.ndarray) -> None:
    """An MLP of Dense layers (ReLU hidden, linear output) as ``kernel_i``, ``bias_i`` arrays.

    Also writes ``probe_observations`` and the model's outputs on them, so the
    copy on the other side can be checked.
    """
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    others = [layer for layer in model.layers
              if not isinstance(layer, (keras.layers.Dense, keras.layers.InputLayer))]
    activations = [layer.get_config()["activation"] for layer in dense]
    if others or not dense or activations != ["relu"] * (len(dense) - 1) + ["linear"]:
        raise ValueError(f"{model.name} is not an MLP of ReLU Dense layers and a linear output.")
    arrays = {}
    for i, layer in enumerate(dense):
        kernel, bias = layer.get_weights()
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel, bias
    write_npz(path, probe_observations=probe, probe_outputs=_outputs(model, probe), **arrays)


def load_exported(network: keras.Model, path: str) -> float:
    """Sets ``network``'s weights from an exported MLP; returns max |Δ output| on its probe.

    Raises:
        ValueError: the rebuilt network's outputs on the probe differ from the exporter's.
    """
    with np.load(path, allow_pickle=False) as arrays:
        count = sum(1 for name in arrays.files if name.startswith("kernel_"))
        weights = [arrays[f"{kind}_{i}"] for i in range(count) for kind in ("kernel", "bias")]
        probe, expected = arrays["probe_observations"], arrays["probe_outputs"]
    network.set_weights(weights)
    difference = float(np.abs(_outputs(network, probe) - expected).max())
    if difference > 1e-4 * max(1.0, float(np.abs(expected).max())):
        raise ValueError(f"the network rebuilt from {path} differs from the exported one "
                         f"(max |Δ| = {difference:.3g}).")
    return difference


def _outputs(model: keras.Model, observations: np.ndarray) -> np.ndarray:
    return np.asarray(model(observations.astype(np.float32), training=False))


# ------------------------------------------------------------------ the check


class ReachCheck:
    """The end-of-round check: selection episodes through tfkd's evaluation, 100% or not.

    Called with the student, its env steps and training wall time after each
    round; returns True once the normalised score on the selection episodes
    reaches 1. Remembers the weights to report: those of the first round that
    reached 1, else those with the best selection return (ties: the later round).
    """

    def __init__(self, env_id: str, seeds, teacher_return: float, random_return: float):
        self.env_id, self.seeds = env_id, list(seeds)
        self.teacher_return, self.random_return = teacher_return, random_return
        self.curve: list[dict] = []
        self.reached_round: int | None = None
        self.best_return, self.best_round, self.best_weights = -np.inf, -1, None

    def __call__(self, network: keras.Model, env_steps: int, wall_time_s: float) -> bool:
        stats = evaluate_policy(self.env_id, network, self.seeds)
        score = normalized_score(stats.mean, self.random_return, self.teacher_return)
        round_index = len(self.curve)
        self.curve.append({"round": round_index, "env_steps": int(env_steps),
                           "wall_time_s": float(wall_time_s), "selection_return": stats.mean,
                           "selection_score": score})
        if stats.mean >= self.best_return:
            self.best_return, self.best_round = stats.mean, round_index
            self.best_weights = network.get_weights()
        if score is not None and score >= 1.0:
            self.reached_round = round_index
            return True
        return False

    def outcome(self) -> dict:
        """Time and env steps to 100% (or of the whole run), the round whose weights are kept."""
        if not self.curve:
            raise RuntimeError("the run finished no round.")
        reached = self.reached_round is not None
        at = self.curve[self.reached_round if reached else -1]
        return {"reached": reached, "wall_time_s": at["wall_time_s"],
                "env_steps": at["env_steps"], "rounds": len(self.curve),
                "kept_round": self.reached_round if reached else self.best_round,
                "curve": self.curve}


class _RoundCheck(keras.callbacks.Callback):
    """Runs a :class:`ReachCheck` after each of ``tfkd.rl.distill``'s rounds, its time left out."""

    def __init__(self, check: ReachCheck):
        super().__init__()
        self.check, self.start, self.paused = check, time.perf_counter(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        stopped = time.perf_counter()
        if self.check(self.model, logs["env_steps"], stopped - self.start - self.paused):
            self.model.stop_training = True
        self.paused += time.perf_counter() - stopped

    def on_train_end(self, logs=None):
        if self.check.reached_round is None:  # else the last round is the one that reached
            self.model.set_weights(self.check.best_weights)


# ---------------------------------------------------------------------- runs


def run_tfkd(method: str, teacher, student: keras.Model, env_id: str, setup: rl.Setup,
             seed: int, check: ReachCheck) -> dict:
    """One tfkd run through the public API; the student ends with the weights to report."""
    callback = _RoundCheck(check)  # the clock starts here
    config = rl.distill_configs(env_id, setup, seed, eval_episodes=0, keep_best=False,
                                callbacks=[callback], workers=TFKD_WORKERS.get(method, 0)
                                )[TFKD_CONTROL[method]]
    history = distill(teacher, student, config)
    return {"loss": history.loss, "round_agreement": history.agreement}


def warm_up(teacher, env_id: str) -> None:
    """A tiny untimed ``distill``: TensorFlow's once-per-process costs fall on no timed run.

    The peer's process likewise imports its libraries and runs its first
    forward and backward pass before its clock starts.
    """
    spec = env_spec(make_env(env_id), env_id)
    student = build_mlp(spec.observation_shape, spec.num_actions, (4,), name="warm_up")
    distill(teacher, student, DistillConfig(
        env_id=env_id, total_env_steps=16, steps_per_round=8, train_steps_per_round=2,
        batch_size=8, eval_episodes=0, progress=False))


def run_peer(method: str, student: keras.Model, env_id: str, setup: rl.Setup, seed: int,
             check: ReachCheck, peer: dict, teacher_file: str, work: str) -> dict:
    """One imitation run in the peer venv; the student ends with the weights to report."""
    rounds = len(rl.distill_configs(env_id, setup, seed)["teacher-driven"].round_steps())
    threads = peer["threads"]
    settings = peer_settings(env_id, setup, seed, peer["num_envs"])
    settings.update(method=PEER_METHOD[method], teacher=teacher_file, work_dir=work,
                    threads=threads, rounds=rounds)
    config_path = os.path.join(work, "config.json")
    write_json(config_path, settings)
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_path = os.path.join(work, "peer.log")
    info: dict = {"peer_env_id": settings["env_id"], "peer_rounds": []}
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen([peer["python"], PEER_SCRIPT, config_path],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   text=True, env=environment)
        try:
            for line in process.stdout:
                if not line.startswith(MARK):
                    log.write(line)
                    continue
                message = json.loads(line[len(MARK):])
                if message["event"] == "ready":
                    info["versions"] = message["versions"]
                    info["teacher_max_abs_q_difference"] = message["teacher_max_abs_q_difference"]
                elif message["event"] == "round":
                    load_exported(student, message["weights"])
                    stop = check(student, message["env_steps"], message["wall_time_s"])
                    info["peer_rounds"].append({k: message[k] for k in message if k not in (
                        "event", "weights")})
                    process.stdin.write("stop\n" if stop else "continue\n")
                    process.stdin.flush()
                elif message["event"] == "done":
                    info["env_steps_total"] = message["env_steps"]
        finally:
            process.stdin.close()
            status = process.wait()
    if status != 0:
        with open(log_path, encoding="utf-8") as file:
            tail = file.read()[-3000:]
        raise RuntimeError(f"{method} failed (exit {status}); the end of {log_path}:\n{tail}")
    if check.reached_round is None:  # else the last round reported is the one that reached
        student.set_weights(check.best_weights)
    return info


def peer_settings(env_id: str, setup: rl.Setup, seed: int | None,
                  num_envs: int | None = None) -> dict:
    """What the peer runs with: tfkd's budget, rounds, batch, learning rate, β schedule and
    envs (unless ``num_envs``)."""
    config = rl.distill_configs(env_id, setup, seed or 0)["student-driven"]
    return {"env_id": PEER_ENV_IDS.get(env_id, env_id), "seed": seed,
            "total_env_steps": config.total_env_steps, "steps_per_round": config.steps_per_round,
            "train_steps_per_round": config.train_steps_per_round,
            "batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "beta_decay": config.beta_decay, "num_envs": num_envs or config.num_envs,
            "student_units": list(setup.student_units)}


# ------------------------------------------------------------------ one seed


def run_seed(env_id: str, setup: rl.Setup, teacher, seed: int, episodes: int, folder: str,
             settings: dict, methods, fresh: bool, peer: dict) -> None:
    """Runs ``methods`` of one seed; each row goes to ``folder/seed-<s>/`` as it finishes."""
    spec = env_spec(make_env(env_id), env_id)
    records = rl.SeedRecords(folder, seed, settings, fresh, FORMAT)

    held_out = held_out_seeds(seed, episodes)
    selection = selection_seeds(seed, setup.eval_episodes)
    baselines = records.saved("baselines")
    if baselines is None:
        uniform = random_policy(spec.num_actions)
        baselines = records.save("baselines", {
            "eval_seeds": held_out, "selection_seeds": selection, "returns": {
                name: {"held_out": list(evaluate_policy(env_id, policy, held_out).returns),
                       "selection": list(evaluate_policy(env_id, policy, selection).returns)}
                for name, policy in (("teacher", teacher), ("random", uniform))}})
    returns = baselines["returns"]
    teacher_return, random_return = (ReturnStats.from_returns(returns[name]["held_out"], held_out)
                                     for name in ("teacher", "random"))
    for method in methods:
        if records.saved(method) is not None:
            print(f"  seed {seed} {method}: saved, reused", flush=True)
            continue
        check = ReachCheck(env_id, selection, float(np.mean(returns["teacher"]["selection"])),
                           float(np.mean(returns["random"]["selection"])))
        seed_everything(seed)  # the same initial Keras weights for both tfkd methods
        student = build_mlp(spec.observation_shape, spec.num_actions, setup.student_units,
                            name="student")
        if method in TFKD_CONTROL:
            info = run_tfkd(method, teacher, student, env_id, setup, seed, check)
        else:
            with tempfile.TemporaryDirectory(prefix="tfkd-peers-") as work:
                teacher_file = os.path.join(work, "teacher.npz")
                probe = np.random.default_rng(seed).normal(
                    size=(PROBE_ROWS, *spec.observation_shape)).astype(np.float32)
                export_mlp(teacher, teacher_file, probe)
                info = run_peer(method, student, env_id, setup, seed, check, peer,
                                teacher_file, work)
        outcome = check.outcome()
        comparison = compare_policies(env_id, teacher, student, held_out,
                                      teacher_return=teacher_return, random_return=random_return,
                                      measure_latency=False)
        stats = comparison.student
        score_ci95 = [normalized_score(r, random_return.mean, teacher_return.mean)
                      for r in stats.ci95]
        records.save(method, {"eval_seeds": held_out, "row": {
            "method": method, "seed": seed, "params": count_params(student), **outcome,
            "mean_return": stats.mean, "std_return": stats.std, "ci95": list(stats.ci95),
            "normalized_score": comparison.normalized_score,
            "normalized_score_ci95": None if None in score_ci95 else sorted(score_ci95),
            "agreement": comparison.agreement, **info}})
        print(f"  seed {seed} {method}: {'reached 100%' if outcome['reached'] else 'not reached'}"
              f" after {outcome['env_steps']:,} env steps, {outcome['wall_time_s']:.1f} s "
              f"(training); held-out score {rl._fmt(comparison.normalized_score, 3)}", flush=True)


# --------------------------------------------------------------- aggregation


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def summarize(rows_by_method: dict[str, list[dict]]) -> dict:
    """Per method: medians over seeds with [min, max]; the score also as mean with its CI.

    Per pair in :data:`RATIOS`: the per-seed ratio of wall times and of env
    steps (to 100%, or of the whole budget where a run did not get there).
    """
    methods = []
    for method, rows in rows_by_method.items():
        entry = {"method": method, "seeds": [r["seed"] for r in rows],
                 "params": rows[0]["params"], "reached": sum(r["reached"] for r in rows)}
        for name in ("wall_time_s", "env_steps", "normalized_score"):
            values = [r[name] for r in rows]
            entry[name] = None if None in values else _spread(values)
        entry["normalized_score_mean"] = rl._across_seeds([r["normalized_score"] for r in rows])
        entry["mean_return"] = rl._across_seeds([r["mean_return"] for r in rows])
        methods.append(entry)
    ratios = []
    for numerator, denominator in RATIOS:
        if numerator not in rows_by_method or denominator not in rows_by_method:
            continue
        tops = {r["seed"]: r for r in rows_by_method[numerator]}
        bottoms = {r["seed"]: r for r in rows_by_method[denominator]}
        seeds = sorted(set(tops) & set(bottoms))
        if not seeds:
            continue
        per_seed = [{"seed": s, "both_reached": tops[s]["reached"] and bottoms[s]["reached"],
                     "wall_time": tops[s]["wall_time_s"] / bottoms[s]["wall_time_s"],
                     "env_steps": tops[s]["env_steps"] / bottoms[s]["env_steps"]}
                    for s in seeds]
        ratios.append({"numerator": numerator, "denominator": denominator, "per_seed": per_seed,
                       "wall_time": _spread([r["wall_time"] for r in per_seed]),
                       "env_steps": _spread([r["env_steps"] for r in per_seed])})
    return {"methods": methods, "ratios": ratios}


def _median_range(entry: dict | None, form: str) -> str:
    if entry is None:
        return "–"
    if len(entry["values"]) == 1:
        return format(entry["median"], form)
    return (f"{format(entry['median'], form)} "
            f"[{format(entry['min'], form)}, {format(entry['max'], form)}]")


def table(env_id: str, summary: dict) -> str:
    lines = ["| env | method | seeds | reached 100% | wall time to 100% (s) | env steps to 100% "
             "| final normalised score | score, mean [95% CI] |", "|" + "---|" * 8]
    for e in summary["methods"]:
        lines.append(f"| {env_id} | {e['method']} | {len(e['seeds'])} "
                     f"| {e['reached']}/{len(e['seeds'])} "
                     f"| {_median_range(e['wall_time_s'], '.1f')} "
                     f"| {_median_range(e['env_steps'], ',.0f')} "
                     f"| {_median_range(e['normalized_score'], '.3f')} "
                     f"| {rl._with_ci(e['normalized_score_mean'], 3)} |")
    if summary["ratios"]:
        lines += ["", "| env | ratio | per seed | wall time, median [min, max] | env steps, median "
                  "[min, max] |", "|" + "---|" * 5]
    for r in summary["ratios"]:
        per_seed = ", ".join(f"{x['wall_time']:.2f}" + ("" if x["both_reached"] else "*")
                             for x in r["per_seed"])
        lines.append(f"| {env_id} | {r['numerator']} / {r['denominator']} | {per_seed} "
                     f"| {_median_range(r['wall_time'], '.2f')} "
                     f"| {_median_range(r['env_steps'], '.2f')} |")
    return "\n".join(lines)


def summarize_env(env_id: str, out: str, settings: dict) -> dict | None:
    """Summarises every saved row with these settings; writes ``<out>/peers/<env>.json``."""
    rows_by_method: dict[str, list[dict]] = {}
    versions = {}
    for path in glob.glob(os.path.join(out, "peers", env_id, "seed-*", "*.json")):
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
        if record.get("settings") == settings and "row" in record:
            row = record["row"]
            rows_by_method.setdefault(row["method"], []).append(row)
            if "versions" in row:
                versions["imitation side"] = row["versions"]
    rows_by_method = {m: sorted(rows_by_method[m], key=lambda r: r["seed"])
                      for m in METHODS if m in rows_by_method}
    if not rows_by_method:
        return None
    versions["tfkd side"] = rl.versions()
    result = {"format": FORMAT, "env": env_id, "peer_env": PEER_ENV_IDS.get(env_id, env_id),
              "settings": settings, "versions": versions, "summary": summarize(rows_by_method)}
    write_json(os.path.join(out, "peers", f"{env_id}.json"), result)
    return result


def report(out: str, env_ids) -> None:
    found = False
    for env_id in env_ids:
        path = os.path.join(out, "peers", f"{env_id}.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as file:
            result = json.load(file)
        found = True
        peer = result["versions"].get("imitation side")
        note = "" if peer is None else (
            f"; imitation {peer['imitation']}, stable-baselines3 {peer['stable_baselines3']}, "
            f"torch {peer['torch']}, gymnasium {peer['gymnasium']} ({result['peer_env']})")
        print(f"\n{env_id}: {result['settings']['episodes']} held-out episodes per seed; "
              f"tfkd on gymnasium {result['versions']['tfkd side']['gymnasium']}{note}\n")
        print(table(env_id, result["summary"]))
        if any(not x["both_reached"] for r in result["summary"]["ratios"] for x in r["per_seed"]):
            print("\n*: a side did not reach 100%; its time is that of its whole budget.")
    if not found:
        print(f"no results in {out}/peers yet: run benchmarks/peers.py")


def _pins() -> list[str]:
    with open(PEER_REQUIREMENTS, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip() and not line.startswith("#")]


# ---------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(rl.SETUPS), action="append",
                        help="environment(s) to run (default: both)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="independent run seeds (default: 0 1 2 3 4; --smoke: 0)")
    parser.add_argument("--episodes", type=int,
                        help="held-out episodes per seed (default: 100; --smoke: 3)")
    parser.add_argument("--out", help="results folder (default: results; --smoke: a new "
                                       "temporary folder)")
    parser.add_argument("--teachers", help="where a teacher is trained when none is committed or "
                                           "with --retrain-teachers: benchmarks/rl.py's cache, a "
                                           "folder named teachers (default: <out>/teachers)")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="train the teachers under --teachers instead of loading the "
                             "committed ones (benchmarks/teachers)")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow and PyTorch threads (each side runs alone)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                        help=f"run only these (default: all): {', '.join(METHODS)}")
    parser.add_argument("--peer-venv", default=DEFAULT_PEER_VENV,
                        help=f"imitation's virtual environment, built if missing "
                             f"(default: {DEFAULT_PEER_VENV})")
    parser.add_argument("--peer-envs", type=int,
                        help="imitation's vector envs (default: tfkd's, 8); imitation collects "
                             "whole episodes on all of them")
    parser.add_argument("--fresh", action="store_true", help="rerun saved rows")
    parser.add_argument("--summarize", action="store_true",
                        help="run nothing: summarise and print the rows saved so far")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny CartPole teacher, budget and student: a check only")
    args = parser.parse_args(argv)
    setups = {"CartPole-v1": rl.SMOKE_SETUP} if args.smoke else dict(rl.SETUPS)
    args.seeds = args.seeds if args.seeds is not None else [0] if args.smoke else [0, 1, 2, 3, 4]
    args.episodes = args.episodes or (3 if args.smoke else 100)
    args.out = args.out or (tempfile.mkdtemp(prefix="tfkd-peers-smoke-") if args.smoke
                            else "results")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct non-negative integers")
    if args.peer_envs is not None and args.peer_envs < 1:
        parser.error("--peer-envs must be at least 1")
    teachers_out = args.out
    if args.teachers is not None:
        if os.path.basename(os.path.normpath(args.teachers)) != "teachers":
            parser.error("--teachers must name the folder benchmarks/rl.py caches teachers in "
                         "(<its --out>/teachers)")
        teachers_out = os.path.dirname(os.path.abspath(args.teachers))
    env_ids = [env for env in (args.env or list(setups)) if env in setups]
    methods = () if args.summarize else args.methods or METHODS
    rl.versions()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    peer = None
    if any(method in PEER_METHOD for method in methods):
        peer = {"python": peer_python(args.peer_venv), "threads": args.threads,
                "num_envs": args.peer_envs}
    start = time.perf_counter()
    for env_id in env_ids:
        setup = setups[env_id]
        teacher, description = rl.teacher_for(env_id, setup, teachers_out,
                                                retrain=args.retrain_teachers)
        settings = strict_json({
            "setup": setup.as_dict(), "episodes": args.episodes, "threads": args.threads,
            "teacher_best_return": description["best_return"],
            "peer": {"requirements": _pins(),
                     **peer_settings(env_id, setup, None, args.peer_envs)}})
        if PEER_ENV_IDS.get(env_id, env_id) != env_id and peer is not None:
            print(f"{env_id}: imitation runs {PEER_ENV_IDS[env_id]} (gymnasium 0.29), tfkd "
                  f"{env_id} (gymnasium {gymnasium.__version__}); every evaluation is tfkd's, "
                  f"on {env_id}", flush=True)
        folder = os.path.join(args.out, "peers", env_id)
        if any(method in TFKD_CONTROL for method in methods):
            warm_up(teacher, env_id)
        for seed in args.seeds if methods else ():
            print(f"{env_id} seed {seed}:", flush=True)
            run_seed(env_id, setup, teacher, seed, args.episodes, folder, settings, methods,
                     args.fresh, peer)
        summarize_env(env_id, args.out, settings)
    if methods:
        print(f"\ntotal wall time {time.perf_counter() - start:.0f} s (results in {args.out})")
    report(args.out, env_ids)


if __name__ == "__main__":
    main()
