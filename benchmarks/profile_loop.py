"""Where the time goes in one distillation run (``tfkd.rl.distill``), phase by phase.

Runs ``benchmarks/rl.py``'s student-driven and teacher-driven setups (its
committed teachers, its budgets) with timers around the loop's phases:

- collection: the control policy acting (one compiled call per vector step),
  env stepping, the teacher labelling the round's states (large batches);
- fit: ``Distiller.fit`` per round, of which building the round's
  ``tf.data`` pipeline; the number of times the training step was traced;
- selection evaluation (the keep-best episodes, with the teacher's and the
  random policy's baselines), the agreement, and the rest (bookkeeping,
  callbacks, checkpoints: whatever is not in a phase).

``--compare-steps-per-execution`` adds a run whose fit makes one minibatch
update per compiled call (Keras' default), to show what running several per
call saves.

Usage::

    python benchmarks/profile_loop.py
    python benchmarks/profile_loop.py --smoke --out /tmp/prof-smoke   # seconds: a check only

Results: ``<out>/profile_loop.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium  # noqa: E402

from rl import SETUPS, SMOKE_SETUP, teacher_for, versions  # noqa: E402
from tfkd import Distiller  # noqa: E402
from tfkd.files import write_json  # noqa: E402
from tfkd.models import build_mlp  # noqa: E402
from tfkd.rl import DistillConfig, distill, env_spec, make_env, seed_everything  # noqa: E402
from tfkd.rl import loops, policies, rollouts  # noqa: E402

FORMAT = "tfkd.benchmarks.profile_loop/1"
PHASES = ("acting", "env stepping", "teacher labelling", "fit: training steps",
          "fit: building the dataset", "selection evaluation", "agreement", "other")


class Timers:
    """Seconds and calls per phase; a call inside another phase counts for the outer
    one (the selection episodes' env steps are evaluation, not collection)."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self.stack: list[str] = []

    def wrap(self, owner, name: str, phase: str) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args, **kwargs):
            if timers.stack:
                return original(*args, **kwargs)
            timers.stack.append(phase)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.seconds[phase] += time.perf_counter() - started
                timers.calls[phase] += 1
                timers.stack.pop()

        setattr(owner, name, timed)
        self.restore.append((owner, name, original))

    @contextlib.contextmanager
    def installed(self):
        self.restore = []
        self.wrap(loops._Task, "evaluate", "selection evaluation")
        self.wrap(loops._Task, "evaluate_baselines", "selection evaluation")
        self.wrap(loops._Task, "agreement", "agreement")
        self.wrap(gymnasium.vector.SyncVectorEnv, "step", "env stepping")
        self.wrap(policies.MixturePolicy, "__call__", "acting")
        self.wrap(rollouts.RolloutCollector, "label", "teacher labelling")
        self.wrap(Distiller, "fit", "fit: training steps")
        self.wrap(loops._Run, "_dataset", "fit: building the dataset")
        try:
            yield self
        finally:
            for owner, name, original in reversed(self.restore):
                setattr(owner, name, original)


def profile(env_id: str, control: str, args, most_per_call: int | None = None) -> dict:
    setup = SMOKE_SETUP if args.smoke else SETUPS[env_id]
    teacher, _ = teacher_for(env_id, setup, args.teachers, retrain=args.retrain_teachers)
    spec = env_spec(make_env(env_id), env_id)
    seed_everything(0)
    student = build_mlp(spec.observation_shape, spec.num_actions, setup.student_units)
    config = DistillConfig(
        env_id=env_id, control=control, total_env_steps=setup.distill_steps,
        steps_per_round=setup.steps_per_round, train_steps_per_round=setup.train_steps_per_round,
        batch_size=setup.batch_size, learning_rate=setup.learning_rate,
        distillation_loss="q_value_kl", eval_episodes=setup.eval_episodes, seed=0,
        progress=False)
    # Compiled, the training step's Python body runs only when it is traced.
    traces, traced = [0], []
    original_step, original_round = Distiller.train_step, loops._Run._round

    def counting_step(distiller, data):
        traces[0] += 1
        return original_step(distiller, data)

    def counting_round(run, round_index):
        result = original_round(run, round_index)
        traced.append(traces[0])
        return result

    default_most = loops.MOST_STEPS_PER_EXECUTION
    Distiller.train_step, loops._Run._round = counting_step, counting_round
    if most_per_call is not None:
        loops.MOST_STEPS_PER_EXECUTION = most_per_call
    try:
        with Timers().installed() as timers:
            started = time.perf_counter()
            history = distill(teacher, student, config)
            total = time.perf_counter() - started
    finally:
        Distiller.train_step, loops._Run._round = original_step, original_round
        loops.MOST_STEPS_PER_EXECUTION = default_most
    seconds = dict(timers.seconds)
    seconds["other"] = total - sum(seconds.values())
    per_call = loops.steps_per_execution(setup.train_steps_per_round,
                                         most_per_call or default_most)
    return {"env_id": env_id, "control": control, "total_s": total,
            "env_steps": history.env_steps[-1],
            "updates": setup.train_steps_per_round * history.num_rounds,
            "updates_per_call": per_call,
            "phases": {phase: {"seconds": seconds.get(phase, 0.0),
                               "calls": timers.calls.get(phase, 0)} for phase in PHASES},
            "train_step_traces_after_each_round": traced}


def table(runs: list[dict]) -> str:
    heads = [f"{r['env_id']} {r['control']}-driven, {r['updates_per_call']} update(s)/call"
             for r in runs]
    lines = ["| phase | " + " | ".join(heads) + " |", "|---|" + "---|" * len(runs)]
    for phase in PHASES:
        cells = [f"{r['phases'][phase]['seconds']:.1f} s "
                 f"({100 * r['phases'][phase]['seconds'] / r['total_s']:.0f}%)" for r in runs]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{r['total_s']:.1f} s**" for r in runs) + " |")
    lines.append("| env steps / updates | " + " | ".join(
        f"{r['env_steps']:,} / {r['updates']:,}" for r in runs) + " |")
    lines.append("| training step traced (after each round) | " + " | ".join(
        ", ".join(map(str, r["train_step_traces_after_each_round"])) for r in runs) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(SETUPS))
    parser.add_argument("--controls", nargs="+", default=["student", "teacher"])
    parser.add_argument("--compare-steps-per-execution", action="store_true",
                        help="also run each setup with one update per compiled call")
    parser.add_argument("--teachers", default="results",
                        help="folder whose teachers/<env>-<units>/ holds the teacher trained "
                             "when none is committed or with --retrain-teachers")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="train the teachers under --teachers instead of loading the committed "
                             "ones (benchmarks/teachers)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--smoke", action="store_true", help="CartPole, tiny budget: a check only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.envs = ["CartPole-v1"]
    runs = []
    for env_id in args.envs:
        for control in args.controls:
            print(f"profiling {env_id}, {control}-driven ...", flush=True)
            runs.append(profile(env_id, control, args))
            if args.compare_steps_per_execution:
                runs.append(profile(env_id, control, args, most_per_call=1))
    path = os.path.join(args.out, "profile_loop.json")
    write_json(path, {"format": FORMAT, "runs": runs, "machine": {"cpus": os.cpu_count()},
                      "versions": versions()})
    print(table(runs))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
