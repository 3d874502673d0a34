"""Every code block in README.md and docs/*.md runs as written.

Blocks of one document run in order, in one scratch folder, so a later block
can use what an earlier one made (a teacher, a student). Python blocks run in
a fresh interpreter each; bash blocks in bash with ``set -e``. Budgets are
made tiny without editing the text: the ``tfkd`` command gets small-budget
flags appended (argparse keeps the last value of a repeated flag), and
``python examples/X.py`` gets ``--smoke`` (later blocks may use what it
makes). A ``python benchmarks/X.py`` line has its arguments parsed by the
benchmark's own parser and goes no further: tests/test_benchmarks.py runs
every benchmark with ``--smoke``, and running each again here would only
double the suite's time. The lines are collected while the document's blocks
run and parsed after them in one interpreter, which imports TensorFlow once.

A block that must not run here (it installs packages, or is ``make test``
itself) carries ``<!-- docs-test: skip (reason) -->`` on the line before
its fence; the reason is required.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!-- docs-test: skip \((.+)\) -->$")
RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash"}

# Appended to each `tfkd SUBCOMMAND ...` line: the smallest budgets that still
# train, select and evaluate something real.
TINY_FLAGS = {
    "train-teacher": "--steps 300 --select-episodes 2 --eval-episodes 2",
    "distill": "--steps 400 --steps-per-round 200 --train-steps-per-round 20 "
               "--select-episodes 2 --eval-episodes 2",
    "evaluate": "--eval-episodes 2",
    "export": "--eval-episodes 2 --latency-repeats 10 --finetune-steps 100 "
              "--train-steps-per-round 5 --select-episodes 1",
    "kickstart": "--steps 400 --select-episodes 2 --eval-episodes 2",
    "demo": "--teacher-steps 300 --steps 400 --steps-per-round 200 --train-steps-per-round 20 "
            "--select-episodes 2 --eval-episodes 2",
}


# A benchmark line's command line, appended to the file BENCHMARK_LINES names.
COLLECT = """
import json, os, sys
with open(os.environ["BENCHMARK_LINES"], "a", encoding="utf-8") as file:
    file.write(json.dumps(sys.argv[1:]) + "\\n")
"""

# Runs each collected script until its argparse parser has accepted the command
# line: an unknown flag or a bad value fails with argparse's message and exit 2.
PARSE_ONLY = """
import argparse, json, os, runpy, shlex, sys
class Parsed(BaseException):
    pass
parse_args = argparse.ArgumentParser.parse_args
def parse_and_stop(parser, *args, **kwargs):
    parse_args(parser, *args, **kwargs)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_and_stop
for line in open(sys.argv[1], encoding="utf-8"):
    sys.argv = json.loads(line)
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python script` does
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except Parsed:
        continue
    sys.exit(f"{shlex.join(sys.argv)}: the script never parsed its arguments")
"""


def code_blocks(path: Path):
    """(language, first line number, source, skip reason or None) of each fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        skip = SKIP.match(lines[i - 1].strip()) if i else None
        start, language, body = i + 1, match.group(1), []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{start}: unclosed code block")
        blocks.append((language, start, "\n".join(body) + "\n", skip.group(1) if skip else None))
        i += 1
    return blocks


def _shell_prelude() -> str:
    flags = " ".join(f'{name}) extra="{value}" ;;' for name, value in TINY_FLAGS.items())
    return (
        "set -euo pipefail\n"
        f'tfkd() {{ local extra=""; case "${{1:-}}" in {flags} *) ;; esac; '
        f'"{sys.executable}" -m tfkd.cli "$@" $extra; }}\n'
    )


def _scratch(tmp_path: Path) -> dict:
    """A scratch folder that looks like the repository root to the documents."""
    for name in ("examples", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    # Examples get --smoke; benchmark lines are collected for PARSE_ONLY;
    # anything else runs untouched.
    python.write_text(
        "#!/usr/bin/env bash\n"
        f'case "${{1:-}}" in examples/*.py) exec "{sys.executable}" "$@" --smoke ;;\n'
        f'  benchmarks/*.py) exec "{sys.executable}" -c {shlex.quote(COLLECT)} "$@" ;; esac\n'
        f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "BENCHMARK_LINES": str(tmp_path / "benchmark-lines.jsonl")}
    return env


def test_every_block_is_runnable_or_says_why_not():
    for path in DOCUMENTS:
        for language, line, _, skip in code_blocks(path):
            assert language in RUNNABLE or language == "text" or skip, (
                f"{path.name}:{line}: give the block a language (python, bash, text) "
                f"or a docs-test skip reason")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_document_blocks_run(path: Path, tmp_path: Path):
    env = _scratch(tmp_path)
    for language, line, source, skip in code_blocks(path):
        if skip or RUNNABLE.get(language) is None:
            continue
        if RUNNABLE[language] == "python":
            command = [sys.executable, "-c", source]
        else:
            command = ["bash", "-c", _shell_prelude() + source]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, (
            f"{path.name}:{line}: the {language} block failed ({shlex.join(command[:2])}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if os.path.exists(env["BENCHMARK_LINES"]):
        result = subprocess.run([sys.executable, "-c", PARSE_ONLY, env["BENCHMARK_LINES"]],
                                cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, (
            f"{path.name}: a benchmark line's arguments do not parse:\n{result.stderr[-3000:]}")
