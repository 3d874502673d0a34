"""Each example as a script: ``--help`` runs nothing, ``--smoke --out DIR`` runs in
seconds, writes only under DIR and reports its returns by the evaluation protocol."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NAMES = sorted(path.name for path in EXAMPLES.glob("*.py"))
# Optional packages an example needs beyond tfkd's core.
NEEDS = {
    "atari_pong.py": ("tf_agents", "ale_py"),
    "cartpole_tf_agents.py": ("tf_agents",),
    "digits_distillation.py": ("sklearn",),
    "lunar_lander.py": ("tf_agents", "Box2D"),
    "offline_npz.py": ("tf_agents",),
}
FLAGS = ("--smoke", "--seed", "--out")
# The protocol's line for a policy: held-out mean ± std, 95% CI, normalised score.
NUMBER = r"-?\d+\.\d"
RETURN_LINE = re.compile(rf"^{{}}: return {NUMBER} ± {NUMBER} \(95% CI {NUMBER} to {NUMBER}\), "
                         rf"normalised score (-?\d+\.\d\d|undefined)$", re.MULTILINE)
PARAMS_LINE = re.compile(r"^teacher: [\d,]+ parameters; student: [\d,]+ \(", re.MULTILINE)


def environment():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg")
    env.pop("TF_USE_LEGACY_KERAS", None)  # Each example sets what it needs itself.
    return env


def run(command, cwd, timeout=600):
    result = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result.stdout


def files(folder: pathlib.Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def strict_json(path: pathlib.Path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("name", NAMES)
def test_help_imports_nothing_heavy_and_documents_every_flag(name, tmp_path):
    # Runs the script as __main__ in a process that records each flag's help
    # and reports what got imported.
    probe = (
        "import argparse, runpy, sys\n"
        "helps = []\n"
        "add_argument = argparse.ArgumentParser.add_argument\n"
        "def record(self, *args, **kwargs):\n"
        "    action = add_argument(self, *args, **kwargs)\n"
        "    helps.append((action.option_strings, action.help))\n"
        "    return action\n"
        "argparse.ArgumentParser.add_argument = record\n"
        f"sys.argv = [{str(EXAMPLES / name)!r}, '--help']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print('WITHOUT HELP:', [flags for flags, text in helps if not text])\n"
        "print('IMPORTED:', sorted(m for m in ('tensorflow', 'keras', 'tfkd', 'gymnasium')"
        " if m in sys.modules))\n")
    out = run([sys.executable, "-c", probe], tmp_path, timeout=60)
    assert out.startswith("usage:"), out
    assert "WITHOUT HELP: []" in out and "IMPORTED: []" in out, out
    for flag in FLAGS:
        assert flag in out
    assert files(tmp_path) == set()


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_writes_only_under_out_and_reports_by_the_protocol(name, tmp_path):
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = run([sys.executable, str(EXAMPLES / name), "--smoke", "--out", "out"], cwd)
    written = files(cwd)
    assert written and all(path == "out" or path.startswith("out/") for path in written), written
    results = strict_json(cwd / "out" / "results.json")
    assert PARAMS_LINE.search(out), out
    if name == "digits_distillation.py":
        assert "| mean ± std |" in out and (cwd / "out" / "digits_distillation.png").is_file()
        assert len(results["runs"]) == 1
        return
    for policy in ("teacher", "student", "random"):
        assert re.search(RETURN_LINE.pattern.format(policy), out, re.MULTILINE), out
    assert results["episodes"] == 2 and len(results["eval_seeds"]) == 2
    assert (cwd / "out" / "student.keras").is_file()
    if name == "offline_npz.py":  # A second run reuses the saved dataset and teacher.
        again = run([sys.executable, str(EXAMPLES / name), "--smoke", "--out", "out"], cwd)
        assert "saved" not in again and files(cwd) == written
