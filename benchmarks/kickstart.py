"""Kickstarting benchmark: a DQN student with a scheduled distillation term vs. its weak teacher.

For each environment (LunarLander-v3, CartPole-v1):

1. a deliberately weak DQN teacher (256x256, stopped early once its selection
   return reaches ``weak_target``), the one committed as
   ``benchmarks/teachers/<env>-weak-256x256/`` (``--retrain-teachers``
   trains one under ``<out>/teachers/``); on LunarLander it is also scored
   against the strong teacher of ``benchmarks/rl.py`` (the committed
   ``benchmarks/teachers/<env>-256x256/``; ``--retrain-teachers`` trains
   one under ``<out>/teachers``);
2. for each run seed, the same small network (same initial weights) is
   trained on the same env-step budget by: tfkd.rl.kickstart with each λ
   schedule (constant, linear, exponential, gated), DQN from scratch (the
   same DQN, no distillation term), and pure distillation of the same
   teacher (student-driven DAgger, ``tfkd.rl.distill``);
3. all are evaluated greedily on the seed's held-out episodes; the normalised
   score is ``(R − R_random) / (R_teacher − R_random)`` against the weak teacher.

The table gives the mean over seeds with a 95% bootstrap interval over seeds;
"steps to DQN's final" is the first evaluation step at which what
keep-best would hand over if the run stopped there (each seed's best
selection-episode return so far, mean over seeds) reaches the same for the
from-scratch DQN at the end of its budget, as a fraction of the budget.
The plot shows both against env steps, mean over seeds: the
selection-episode return of the current weights, and the best so far.

Usage::

    python benchmarks/kickstart.py --threads 1                 # both envs, seeds 0-4
    python benchmarks/kickstart.py --env LunarLander-v3 --seeds 0 1 2
    python benchmarks/kickstart.py --report                    # tables of saved results
    python benchmarks/kickstart.py --smoke --out /tmp/ks-smoke # seconds: a check only

Each method of each seed is written to
``<out>/kickstart/<env>/seed-<s>/<method>.json`` as it finishes (so several
processes may run disjoint seeds or ``--methods`` side by side; a rerun
reuses the rows saved with the same settings unless ``--fresh``); the
summary of every saved row goes to
``<out>/kickstart/<env>.json`` and the plot to ``<out>/kickstart/<env>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rl  # noqa: E402  (the RL benchmark: strong teachers, statistics across seeds)

from tfkd.files import strict_json, write_json  # noqa: E402
from tfkd.models import build_mlp, count_params  # noqa: E402
from tfkd.rl import (DistillConfig, ReturnStats, compare_policies, distill,  # noqa: E402
                     env_spec, evaluate_policy, held_out_seeds, make_env, normalized_score,
                     random_policy, seed_everything)
from tfkd.rl.dqn import DQNConfig, load_dqn_teacher, train_dqn  # noqa: E402
from tfkd.rl.kickstart import SCHEDULES, KickstartConfig, kickstart  # noqa: E402

FORMAT = "tfkd.benchmarks.kickstart/1"
SCRATCH, DAGGER = "DQN from scratch", "distillation (DAgger)"
QDAGGER = "kickstart (linear, QDagger's KL)"
# Each kickstarted method: its changes to the setup's KickstartConfig.
KICKSTARTS = {**{f"kickstart ({name})": {"schedule": name} for name in SCHEDULES},
              QDAGGER: {"schedule": "linear", "loss": "kl", "coefficient": 3.0,
                        "temperature": 0.1}}
METHODS = (*KICKSTARTS, SCRATCH, DAGGER)
# Run order: the baselines and the schedules the bar names first, so a run
# stopped early still holds the comparisons that matter; tables use METHODS.
RUN_ORDER = (SCRATCH, DAGGER, "kickstart (gated)", "kickstart (linear)",
             "kickstart (exponential)", "kickstart (constant)", QDAGGER)


@dataclasses.dataclass
class Setup:
    """One environment's benchmark: the weak teacher and the students' budget."""

    weak_teacher: DQNConfig          # target_return: where the teacher stops
    student: DQNConfig               # the students' DQN (kickstarted and from scratch)
    kick: KickstartConfig            # each method's changes: KICKSTARTS
    steps_per_round: int             # DAgger
    train_steps_per_round: int       # DAgger
    dagger_learning_rate: float = 1e-3

    def kickstart_config(self, method: str) -> KickstartConfig:
        """The distillation term of a kickstarted ``method``."""
        return dataclasses.replace(self.kick, **KICKSTARTS[method])

    def as_dict(self) -> dict:
        values = {"weak_teacher": self.weak_teacher.as_dict(), "student": self.student.as_dict(),
                  "kickstarts": {method: self.kickstart_config(method).as_dict()
                                 for method in KICKSTARTS},
                  "steps_per_round": self.steps_per_round,
                  "train_steps_per_round": self.train_steps_per_round,
                  "dagger_learning_rate": self.dagger_learning_rate}
        for config in (values["weak_teacher"], values["student"]):
            config.pop("progress")
        return strict_json(values)


_LUNAR_TEACHER = rl.SETUPS["LunarLander-v3"].teacher_dqn
_CARTPOLE_TEACHER = rl.SETUPS["CartPole-v1"].teacher_dqn
SETUPS = {
    "LunarLander-v3": Setup(
        weak_teacher=dataclasses.replace(_LUNAR_TEACHER, eval_every=2_500, target_return=-10.0),
        # 30k env steps (a fifth of the strong teacher's 150k), 5 selection episodes
        # every 3k: sized to run 5 seeds x 6 methods on a shared 2-core machine.
        student=dataclasses.replace(_LUNAR_TEACHER, hidden_units=(64, 64),
                                    total_env_steps=30_000, eval_every=3_000, eval_episodes=5),
        kick=KickstartConfig(loss="centered_mse", coefficient=1.0),
        steps_per_round=5_000, train_steps_per_round=2_000, dagger_learning_rate=2e-3,
    ),
    "CartPole-v1": Setup(
        weak_teacher=dataclasses.replace(_CARTPOLE_TEACHER, eval_every=1_000,
                                         target_return=150.0),
        student=dataclasses.replace(_CARTPOLE_TEACHER, hidden_units=(64, 64),
                                    total_env_steps=10_000, eval_every=1_000),
        kick=KickstartConfig(loss="centered_mse", coefficient=1.0),
        steps_per_round=1_000, train_steps_per_round=2_000,
    ),
}
SMOKE_SETUP = Setup(
    weak_teacher=dataclasses.replace(rl.SMOKE_SETUP.teacher_dqn, target_return=30.0),
    student=dataclasses.replace(rl.SMOKE_SETUP.teacher_dqn, hidden_units=(8,),
                                total_env_steps=600, eval_every=300),
    kick=KickstartConfig(loss="centered_mse", coefficient=1.0), steps_per_round=200,
    train_steps_per_round=10,
)


# ------------------------------------------------------------------ teachers


def weak_teacher_for(env_id: str, setup: Setup, out: str, retrain: bool = False):
    """The weak teacher: the committed one (``benchmarks/teachers``) unless
    ``retrain``, else the one cached under ``<out>/teachers``, else one trained
    now (stopped at ``target_return``)."""
    config = setup.weak_teacher
    folder = rl.teacher_folder(f"{env_id}-weak-{'x'.join(map(str, config.hidden_units))}",
                               out, retrain)
    if not os.path.exists(os.path.join(folder, "teacher.json")):
        spec = env_spec(make_env(env_id), env_id)
        seed_everything(config.seed)
        network = build_mlp(spec.observation_shape, spec.num_actions, config.hidden_units,
                            name="weak_teacher")
        print(f"weak teacher: training {env_id} until a selection return of "
              f"{config.target_return}", flush=True)
        history = train_dqn(network, config, out_dir=folder)
        print(f"weak teacher: stopped at env step {history.env_steps}, best selection return "
              f"{history.best_return:.1f}", flush=True)
    teacher, description = load_dqn_teacher(folder)
    if rl.changed_settings(description, config):
        remedy = ("add --retrain-teachers" if os.path.dirname(folder) == rl.COMMITTED_TEACHERS
                  else "delete it to retrain")
        sys.exit(f"error: the weak teacher {folder} was trained with other settings; {remedy}.")
    print(f"weak teacher: {folder}", flush=True)
    return teacher, description


# ----------------------------------------------------------------- one seed


def run_seed(env_id: str, setup: Setup, teacher, seed: int, episodes: int, folder: str,
             settings: dict, methods, fresh: bool) -> None:
    """Runs ``methods`` of one seed; each row is written to ``folder`` as it finishes.

    ``<folder>/seed-<s>/<method>.json`` holds one method's row,
    ``baselines.json`` the weak teacher's and the random policy's; a file with
    the same settings is reused unless ``fresh``.
    """
    spec = env_spec(make_env(env_id), env_id)
    seeds = held_out_seeds(seed, episodes)
    records = rl.SeedRecords(folder, seed, settings, fresh, FORMAT)
    baselines = records.saved("baselines")
    if baselines is None:
        teacher_return = evaluate_policy(env_id, teacher, seeds)
        random_return = evaluate_policy(env_id, random_policy(spec.num_actions), seeds)
        baselines = records.save("baselines", {"eval_seeds": list(seeds), "rows": [
            _baseline_row("weak teacher", seed, count_params(teacher), teacher_return, 1.0, 1.0),
            _baseline_row("random", seed, 0, random_return, 0.0, None)]})
    teacher_return, random_return = (
        ReturnStats.from_returns(row["returns"], seeds) for row in baselines["rows"])
    budget = setup.student.total_env_steps
    dqn_config = dataclasses.replace(setup.student, seed=seed, progress=False)
    for method in methods:
        if records.saved(method) is not None:
            print(f"  seed {seed} {method}: saved, reused", flush=True)
            continue
        seed_everything(seed)  # the same initial weights for every method of this seed
        network = build_mlp(spec.observation_shape, spec.num_actions,
                            setup.student.hidden_units, name="student")
        start = time.perf_counter()
        if method == DAGGER:
            history = distill(teacher, network, DistillConfig(
                env_id=env_id, control="student", beta_decay=0.5, total_env_steps=budget,
                steps_per_round=setup.steps_per_round,
                train_steps_per_round=setup.train_steps_per_round,
                learning_rate=setup.dagger_learning_rate, batch_size=128,
                distillation_loss="q_value_kl", eval_episodes=setup.student.eval_episodes,
                keep_best=True, seed=seed, progress=False))
            curve = (history.env_steps, history.student_return_mean)
        else:
            if method == SCRATCH:
                history = train_dqn(network, dqn_config)
            else:
                history = kickstart(teacher, network, dqn_config, setup.kickstart_config(method))
            curve = (history.eval_steps, history.eval_return_mean)
        seconds = time.perf_counter() - start
        comparison = compare_policies(env_id, teacher, network, seeds, teacher_return=teacher_return,
                                      random_return=random_return, measure_latency=False)
        records.save(method, {"eval_seeds": list(seeds), "rows": [{
            "method": method, "seed": seed, "params": count_params(network),
            "mean_return": comparison.student.mean, "std_return": comparison.student.std,
            "ci95": list(comparison.student.ci95),
            "normalized_score": comparison.normalized_score, "agreement": comparison.agreement,
            "wall_time_s": seconds, "curve_steps": [int(s) for s in curve[0]],
            "curve_returns": list(curve[1]), "history": history.as_dict(),
        }]})
        print(f"  seed {seed} {method}: return {comparison.student.mean:.1f}, score "
              f"{rl._fmt(comparison.normalized_score, 3)}, {seconds:.0f} s", flush=True)


def _baseline_row(name, seed, params, stats, score, agreement) -> dict:
    return {"method": name, "seed": seed, "params": params, "mean_return": stats.mean,
            "std_return": stats.std, "ci95": list(stats.ci95), "normalized_score": score,
            "agreement": agreement, "wall_time_s": None, "returns": list(stats.returns)}


# ------------------------------------------------------------ aggregation


def summarize(rows_by_method: dict[str, list[dict]], budget: int) -> list[dict]:
    """One entry per method: means over the seeds that ran it, with 95% intervals."""
    summary = []
    for method, rows in rows_by_method.items():
        entry = {"method": method, "seeds": [r["seed"] for r in rows],
                 "params": rows[0]["params"]}
        for name in ("mean_return", "normalized_score", "agreement", "wall_time_s"):
            entry[name] = rl._across_seeds([r[name] for r in rows])
        summary.append(entry)
    # What keep-best would hand over if the run stopped at step t: the best
    # selection return so far, mean over seeds. Each method's is compared with
    # DQN's at the end of its budget.
    curves = {method: _mean_curve(rows) for method, rows in rows_by_method.items()
              if "curve_steps" in rows[0]}
    kept = {method: _mean_curve(rows, best_so_far=True)
            for method, rows in rows_by_method.items() if "curve_steps" in rows[0]}
    scratch_final = kept[SCRATCH][1][-1] if SCRATCH in kept else None
    for entry in summary:
        if entry["method"] not in curves:
            entry["curve"] = entry["kept_curve"] = entry["steps_to_scratch_final"] = None
            continue
        steps, returns = curves[entry["method"]]
        entry["curve"] = {"steps": steps, "mean_return": returns}
        steps, returns = kept[entry["method"]]
        entry["kept_curve"] = {"steps": steps, "mean_best_return": returns}
        reached = [] if scratch_final is None else [
            s for s, r in zip(steps, returns) if r >= scratch_final]
        entry["steps_to_scratch_final"] = (
            None if not reached else {"env_steps": reached[0], "fraction": reached[0] / budget})
    return summary


def _mean_curve(rows: list[dict], best_so_far: bool = False) -> tuple[list[int], list[float]]:
    """The selection-return curve, mean over seeds, at the steps every seed evaluated
    (``best_so_far``: each seed's best return up to each step)."""
    common = sorted(set.intersection(*(set(r["curve_steps"]) for r in rows)))
    per_seed = []
    for r in rows:
        returns = [r["curve_returns"][r["curve_steps"].index(s)] for s in common]
        per_seed.append(np.maximum.accumulate(returns) if best_so_far else returns)
    return common, [float(v) for v in np.mean(per_seed, axis=0)]


def table(env_id: str, summary: list[dict]) -> str:
    header = ("| env | method | seeds | params | return, mean over seeds [95% CI] | normalised "
              "score vs weak teacher [95% CI] | steps to DQN's final return | wall time (s) |")
    lines = [header, "|" + "---|" * 8]
    for e in summary:
        reach = e.get("steps_to_scratch_final")
        reach_text = ("–" if e.get("curve") is None else "not reached" if reach is None
                      else f"{reach['env_steps']:,} ({reach['fraction']:.2f})")
        lines.append(f"| {env_id} | {e['method']} | {len(e['seeds'])} | {e['params']:,} "
                     f"| {rl._with_ci(e['mean_return'], 1)} "
                     f"| {rl._with_ci(e['normalized_score'], 3)} | {reach_text} "
                     f"| {rl._fmt_mean(e['wall_time_s'], 0)} |")
    return "\n".join(lines)


def plot(env_id: str, summary: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    teacher = next(e for e in summary if e["method"] == "weak teacher")["mean_return"]["mean"]
    panels = (("curve", "mean_return", "current weights"),
              ("kept_curve", "mean_best_return", "best so far (what keep-best hands over)"))
    for axis, (curve, values, title) in zip(axes, panels):
        for entry in summary:
            if entry.get(curve):
                style = "--" if entry["method"] in (SCRATCH, DAGGER) else "-"
                axis.plot(entry[curve]["steps"], entry[curve][values], style,
                          label=entry["method"])
        axis.axhline(teacher, color="black", linestyle=":", label="weak teacher (held-out)")
        axis.set_xlabel("env steps")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("return (selection episodes, mean over seeds)")
    axes[1].legend(fontsize=7)
    figure.suptitle(f"{env_id}: kickstarting a student past a weak teacher")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------- runs


def run_env(env_id: str, setup: Setup, out: str, seeds: list[int], episodes: int,
            fresh: bool, strong: bool, methods, retrain_teachers: bool = False) -> None:
    teacher, description = weak_teacher_for(env_id, setup, out, retrain_teachers)
    folder = os.path.join(out, "kickstart", env_id)
    settings = strict_json({"setup": setup.as_dict(), "episodes": episodes,
                            "teacher_best_return": description["best_return"]})
    for seed in seeds if methods else ():
        print(f"{env_id} seed {seed}:", flush=True)
        run_seed(env_id, setup, teacher, seed, episodes, folder, settings, methods, fresh)
    strong_score = (_weak_vs_strong(env_id, teacher, out, episodes, retrain_teachers)
                    if strong else None)
    summarize_env(env_id, out, setup, settings, description, strong_score)


def _weak_vs_strong(env_id: str, weak, out: str, episodes: int,
                    retrain_teachers: bool = False) -> dict:
    """The weak teacher's normalised score against the strong teacher of benchmarks/rl.py."""
    strong, description = rl.teacher_for(env_id, rl.SETUPS[env_id], out,
                                         retrain=retrain_teachers)
    path = os.path.join(out, "kickstart", f"{env_id}-weak-vs-strong.json")
    if os.path.exists(path):  # measured once per results folder and strong teacher
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
        if (saved.get("episodes") == episodes
                and saved.get("strong_best_return") == description["best_return"]):
            return saved
    seeds = held_out_seeds(0, episodes)
    spec = env_spec(make_env(env_id), env_id)
    weak_r, strong_r, random_r = (evaluate_policy(env_id, p, seeds).mean for p in (
        weak, strong, random_policy(spec.num_actions)))
    result = {"weak_return": weak_r, "strong_return": strong_r, "random_return": random_r,
              "weak_score_vs_strong": normalized_score(weak_r, random_r, strong_r),
              "strong_best_return": description["best_return"], "episodes": episodes,
              "eval_seeds": list(seeds)}
    write_json(path, result)
    return result


def summarize_env(env_id, out, setup, settings, description, strong_score) -> dict | None:
    """Summarises every saved row with these settings (seeds and methods found so far)."""
    rows_by_method: dict[str, list[dict]] = {}
    paths = glob.glob(os.path.join(out, "kickstart", env_id, "seed-*", "*.json"))
    for path in paths:
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
        if record.get("settings") == settings:
            for row in record["rows"]:
                rows_by_method.setdefault(row["method"], []).append(row)
    order = ("weak teacher", "random", *METHODS)
    rows_by_method = {method: sorted(rows_by_method[method], key=lambda r: r["seed"])
                      for method in order if method in rows_by_method}
    if "weak teacher" not in rows_by_method:
        return None
    seeds = [r["seed"] for r in rows_by_method["weak teacher"]]
    result = {"format": FORMAT, "env": env_id, "seeds": seeds,
              "episodes": settings["episodes"], "settings": settings,
              "weak_teacher": {"best_selection_return": description["best_return"],
                               "env_steps": description["history"]["env_steps"],
                               "vs_strong": strong_score},
              "versions": rl.versions(),
              "summary": summarize(rows_by_method, setup.student.total_env_steps)}
    write_json(os.path.join(out, "kickstart", f"{env_id}.json"), result)
    plot(env_id, result["summary"], os.path.join(out, "kickstart", f"{env_id}.png"))
    return result


def report(out: str, env_ids) -> None:
    found = False
    for env_id in env_ids:
        path = os.path.join(out, "kickstart", f"{env_id}.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as file:
            result = json.load(file)
        found = True
        strong = result["weak_teacher"]["vs_strong"]
        print(f"\n{env_id}: seeds {result['seeds']}, {result['episodes']} held-out episodes "
              "per seed" + ("" if not strong else
                            f"; weak teacher {strong['weak_return']:.1f} = "
                            f"{strong['weak_score_vs_strong']:.3f} of the strong teacher's "
                            f"{strong['strong_return']:.1f} (normalised)") + "\n")
        print(table(env_id, result["summary"]))
    if not found:
        print(f"no results in {out}/kickstart yet: run benchmarks/kickstart.py")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(SETUPS), action="append",
                        help="environment(s) to run (default: both)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="independent run seeds (default: 0 1 2 3 4; --smoke: 0)")
    parser.add_argument("--episodes", type=int,
                        help="held-out episodes per seed (default: 50; --smoke: 3)")
    parser.add_argument("--out", help="results folder (default: results; --smoke: a new "
                                       "temporary folder)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads")
    parser.add_argument("--fresh", action="store_true", help="rerun saved seeds")
    parser.add_argument("--report", action="store_true", help="only print saved results")
    parser.add_argument("--smoke", action="store_true", help="seconds: a check only")
    parser.add_argument("--methods", nargs="+", choices=METHODS, metavar="METHOD",
                        help=f"run only these (default: all): {', '.join(METHODS)}")
    parser.add_argument("--summarize", action="store_true",
                        help="run nothing: summarise the rows saved so far (table, JSON, plot)")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="train the weak and strong teachers under <out>/teachers instead "
                             "of loading the committed ones (benchmarks/teachers)")
    parser.add_argument("--no-strong", action="store_true",
                        help="skip scoring the weak teacher against the strong one (for "
                             "processes that run some of the seeds side by side)")
    args = parser.parse_args(argv)
    setups = {"CartPole-v1": SMOKE_SETUP} if args.smoke else dict(SETUPS)
    args.seeds = args.seeds if args.seeds is not None else [0] if args.smoke else [0, 1, 2, 3, 4]
    args.episodes = args.episodes or (3 if args.smoke else 50)
    args.out = args.out or (tempfile.mkdtemp(prefix="tfkd-ks-smoke-") if args.smoke
                            else "results")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct non-negative integers")
    env_ids = [env for env in (args.env or list(setups)) if env in setups]
    if not args.report:
        rl.versions()
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        start = time.perf_counter()
        for env_id in env_ids:
            run_env(env_id, setups[env_id], args.out, args.seeds, args.episodes, args.fresh,
                    strong=env_id == "LunarLander-v3" and not (args.smoke or args.no_strong),
                    methods=() if args.summarize else args.methods or RUN_ORDER,
                    retrain_teachers=args.retrain_teachers)
        print(f"\ntotal wall time {time.perf_counter() - start:.0f} s (results in {args.out})")
    report(args.out, env_ids)


if __name__ == "__main__":
    main()
