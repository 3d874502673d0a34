"""Benchmark: how much of the return each deployed artefact keeps, over run seeds.

``benchmarks/deploy.py`` times the artefacts of one export; one student's
100 held-out episodes cannot rank its compressed versions (a LunarLander-v3
teacher's returns have a standard deviation near 100). This benchmark
exports the student-driven student of each run seed of ``benchmarks/rl.py``
(``<results>/rl/students/<env>/seed-<S>-student-driven.keras``) with
``tfkd export --seed S --teacher <its teacher> --qat --prune 0.8`` and the
fine-tuning flags of docs/deploying.md's table (no TF-Agents policy), so every artefact plays
that seed's held-out episodes, and gives per artefact:

- its normalised score, the mean over seeds [95% bootstrap CI] and each seed's;
- its score minus the float student's, paired by seed (the same student
  before compression, the same episodes): the mean [95% bootstrap CI];
- its agreement with the float student's action on the states it visits.

The float artefacts (``keras``, ``savedmodel``, ``tflite``) are one network
and score alike; the compressed ones (``*-int8``, ``qat-*``, ``pruned-*``)
are what the paired difference ranks.

Usage::

    python benchmarks/rl.py --env LunarLander-v3 --threads 1               # the students, seeds 0-4
    python benchmarks/deploy_scores.py --env LunarLander-v3 --threads 1    # their exports
    python benchmarks/rl.py --smoke --out DIR && \\
        python benchmarks/deploy_scores.py --smoke --results DIR           # seconds: a check only

Results: ``<out>/deploy_scores/<env>/seed-<S>/`` (the export) and
``seed-<S>.json`` (its scores, written as each seed finishes; a seed
exported from the same student file with the same settings is reused
unless ``--fresh``), ``<out>/deploy_scores/<env>.json``, every seed
summed up, and ``<env>.png``, each artefact's score per seed with the mean
and its interval; the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from rl import (SETUPS, SMOKE_SETUP, _across_seeds, _fmt, _with_ci, plot,  # noqa: E402
                teacher_folder, teacher_name, versions)
from tfkd import cli  # noqa: E402
from tfkd.files import strict_json, write_json  # noqa: E402

FORMAT = "tfkd.benchmarks.deploy_scores/1"
# docs/deploying.md's table: quantisation-aware and 80%-pruned students,
# each fine-tuned by distillation on 50,000 env steps.
EXPORT_FLAGS = ("--qat", "--prune", "0.8", "--finetune-steps", "50000",
                "--train-steps-per-round", "2000", "--select-episodes", "20", "--no-tf-agents")
SMOKE_EXPORT_FLAGS = ("--qat", "--prune", "0.5", "--finetune-steps", "100",
                      "--train-steps-per-round", "10", "--select-episodes", "1",
                      "--latency-repeats", "10", "--no-tf-agents")
FLOAT_STUDENT = "keras"


def student_path(results: str, env_id: str, seed: int) -> str:
    """Where ``benchmarks/rl.py`` saves a seed's student-driven student."""
    return os.path.join(results, "rl", "students", env_id, f"seed-{seed}-student-driven.keras")


def _sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def export_seed(env_id: str, seed: int, student: str, teacher: str, flags: tuple[str, ...],
                episodes: int, folder: str, fresh: bool) -> dict:
    """One seed's export and the scores of its artefacts (reused when saved with these settings)."""
    settings = {"student": os.path.abspath(student), "student_sha256": _sha256(student),
                "teacher": os.path.abspath(teacher), "flags": list(flags), "episodes": episodes}
    saved_path = os.path.join(folder, f"seed-{seed}.json")
    if not fresh and os.path.exists(saved_path):
        with open(saved_path, encoding="utf-8") as file:
            saved = json.load(file)
        if saved.get("settings") == settings:
            print(f"{env_id} seed {seed}: reused {saved_path}", flush=True)
            return saved
    print(f"{env_id} seed {seed}: exporting {student}", flush=True)
    export_dir = os.path.join(folder, f"seed-{seed}")
    code = cli.main(["export", "--student", student, "--env", env_id, "--teacher", teacher,
                     "--out", export_dir, "--seed", str(seed), "--eval-episodes", str(episodes),
                     *flags])
    if code != 0:
        sys.exit(f"error: tfkd export of seed {seed} failed (exit status {code}); its "
                 "message is above.")
    with open(os.path.join(export_dir, "report.json"), encoding="utf-8") as file:
        report = json.load(file)
    entries = {entry["format"]: entry for entry in report["formats"]}
    float_score = entries[FLOAT_STUDENT]["normalized_score"]
    rows = [{"artefact": name, "bytes": entry["bytes"], "bytes_gzip": entry["bytes_gzip"],
             "mean_return": entry["mean_return"], "ci95": entry["ci95"],
             "normalized_score": entry["normalized_score"],
             "score_minus_float": entry["normalized_score"] - float_score,
             "agreement": entry["agreement"]}
            for name, entry in entries.items() if name != "teacher"]
    saved = {"seed": seed, "settings": settings, "teacher_return": entries["teacher"]["mean_return"],
             "random_return": report["random"]["mean_return"], "rows": rows}
    write_json(saved_path, strict_json(saved))
    return saved


def summarize(per_seed: list[dict]) -> list[dict]:
    """Per artefact, in the export's order: scores, paired differences and agreement over seeds."""
    names = [row["artefact"] for row in per_seed[0]["rows"]]
    summary = []
    for name in names:
        rows = [next(row for row in run["rows"] if row["artefact"] == name) for run in per_seed]
        summary.append({
            "artefact": name, "bytes": rows[0]["bytes"], "bytes_gzip": rows[0]["bytes_gzip"],
            "normalized_score": _across_seeds([row["normalized_score"] for row in rows]),
            "score_minus_float": _across_seeds([row["score_minus_float"] for row in rows]),
            "agreement": _across_seeds([row["agreement"] for row in rows])})
    return summary


def table(summary: list[dict]) -> str:
    lines = ["| artefact | bytes | gzip | normalised score [95% CI] | per seed "
             "| − float student [95% CI] | agreement |",
             "|---|---|---|---|---|---|---|"]
    for entry in summary:
        per_seed = ", ".join(f"{value:.3f}" for value in entry["normalized_score"]["values"])
        difference = "–" if entry["artefact"] == FLOAT_STUDENT else \
            _with_ci(entry["score_minus_float"], 3)
        lines.append(f"| {entry['artefact']} | {entry['bytes']:,} | {entry['bytes_gzip']:,} "
                     f"| {_with_ci(entry['normalized_score'], 3)} | {per_seed} | {difference} "
                     f"| {_fmt(entry['agreement']['mean'], 3)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="LunarLander-v3", choices=sorted(SETUPS),
                        help="the env of benchmarks/rl.py's students (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run seeds, each with its student (default: 0 1 2 3 4; --smoke: 0)")
    parser.add_argument("--episodes", type=int,
                        help="held-out episodes per artefact and seed (default: 100; --smoke: 2)")
    parser.add_argument("--results", default="results",
                        help="benchmarks/rl.py's results folder, which holds the students "
                             "(default: %(default)s)")
    parser.add_argument("--out", help="results folder (default: --results)")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="the students were distilled with rl.py --retrain-teachers: export "
                             "against the teacher it trained under --results")
    parser.add_argument("--fresh", action="store_true", help="export every seed again")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads (small MLPs run fastest on one)")
    parser.add_argument("--smoke", action="store_true",
                        help="rl.py --smoke's CartPole student: tiny fine-tuning, 2 episodes")
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    env_id, setup = ("CartPole-v1", SMOKE_SETUP) if args.smoke else (args.env, SETUPS[args.env])
    seeds = args.seeds or ([0] if args.smoke else [0, 1, 2, 3, 4])
    episodes = args.episodes or (2 if args.smoke else 100)
    flags = SMOKE_EXPORT_FLAGS if args.smoke else EXPORT_FLAGS
    out = args.out or args.results
    teacher = teacher_folder(teacher_name(env_id, setup), args.results, args.retrain_teachers)
    missing = [seed for seed in seeds if not os.path.exists(student_path(args.results, env_id, seed))]
    if missing:
        sys.exit(f"error: no student of seed(s) {', '.join(map(str, missing))} in "
                 f"{os.path.dirname(student_path(args.results, env_id, 0))}: run "
                 f"benchmarks/rl.py --env {env_id} --seeds {' '.join(map(str, missing))} "
                 f"--out {args.results} first.")
    folder = os.path.join(out, "deploy_scores", env_id)
    os.makedirs(folder, exist_ok=True)
    per_seed = []
    for seed in seeds:
        per_seed.append(export_seed(env_id, seed, student_path(args.results, env_id, seed),
                                    teacher, flags, episodes, folder, args.fresh))
    result = {"format": FORMAT, "env": env_id, "seeds": seeds, "episodes": episodes,
              "teacher": os.path.abspath(teacher), "flags": list(flags),
              "versions": versions(), "summary": summarize(per_seed), "per_seed": per_seed}
    path = os.path.join(out, "deploy_scores", f"{env_id}.json")
    write_json(path, strict_json(result))
    plot(env_id, [{**entry, "method": entry["artefact"]} for entry in result["summary"]],
         os.path.join(out, "deploy_scores", f"{env_id}.png"))
    print(f"\n{env_id}, seeds {', '.join(map(str, seeds))}; {episodes} held-out episodes per "
          f"artefact and seed:\n"
          f"{table(result['summary'])}\nwritten to {path}")


if __name__ == "__main__":
    main()
