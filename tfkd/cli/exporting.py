"""``tfkd export``: every deployable artefact of a student (:mod:`tfkd.deploy`)."""

from __future__ import annotations

import argparse

from tfkd.cli.inputs import (check_model_fits, checked_env_spec, library_call,
                             load_keras_model, load_teacher)
from tfkd.cli.output import CliError, OutputDir
from tfkd.rl.seeding import seed_everything


def export(args: argparse.Namespace, out: OutputDir) -> int:
    """``tfkd export``: every deployable artefact of a student, each measured (report.json)."""
    from tfkd.deploy import compression, exporter
    from tfkd.deploy import report as deploy_report
    from tfkd.deploy.layout import REPORT_FILE
    from tfkd.rl.datasets import DatasetFileError, load_npz

    seed_everything(args.seed)
    spec = checked_env_spec(args.env)
    student = load_keras_model(args.student, "student")
    check_model_fits(student, spec, f"the student {args.student!r}")
    teacher = load_teacher(args.teacher, args.env)[0] if args.teacher else None
    if (args.qat or args.prune) and teacher is None:
        raise CliError("--qat and --prune fine-tune the student by distillation: give --teacher.")
    calibration = None
    if args.calibration_data:
        try:
            calibration, _ = load_npz(args.calibration_data, tuple(spec.observation_shape),
                                      spec.num_actions)
        except (FileNotFoundError, DatasetFileError, ValueError) as error:
            raise CliError(f"--calibration-data: {str(error).splitlines()[0]}") from None
    variants = {}
    for name, wanted in (("qat", args.qat), ("pruned", args.prune)):
        if wanted:
            print(f"distilling the {name} student ({args.finetune_steps:,} env steps) ...",
                  flush=True)
            variants[name] = library_call(
                compression.distill_compressed, teacher, student, args.env, seed=args.seed,
                total_env_steps=args.finetune_steps, quantize=name == "qat",
                sparsity=args.prune if name == "pruned" else None,
                train_steps_per_round=args.train_steps_per_round,
                eval_episodes=args.select_episodes, progress=not args.quiet)
    with out.staging(last=REPORT_FILE) as folder:
        try:
            results = exporter.write_export(
                student, args.env, folder, teacher, calibration=calibration, variants=variants,
                seed=args.seed, eval_episodes=args.eval_episodes,
                latency_repeats=args.latency_repeats, tf_agents_policy=not args.no_tf_agents,
                teacher_path=args.teacher or "<none>", per_channel=args.per_channel,
                progress=None if args.quiet else print)
        except (ValueError, ImportError) as error:
            raise CliError(str(error).splitlines()[0]) from None
    deploy_report.print_table(args.env, results["formats"], results["random"])
    if teacher is None:
        print("normalised scores are n/a: they are measured against the teacher (--teacher).")
    print(f"artefacts and report.json written to {out.path}")
    return 0
