"""Benchmark: the HTTP policy service under a real load generator (wrk).

Six configurations of ``tfkd serve`` answer the same single-observation
``POST /v1/act`` at the same number of concurrent connections, on loopback,
with the server and the generator on the same cores:

- batched: the default (TFLite on LiteRT, micro-batches of up to 64 rows,
  2 ms wait), uvloop and httptools;
- unbatched: ``--max-batch 1``, one model run per request;
- asyncio + h11: batched, on uvicorn's pure-Python loop and parser;
- 2 workers: batched, ``--workers 2``;
- savedmodel, batched / unbatched: the SavedModel through TensorFlow, whose
  call costs far more than a LiteRT one: where micro-batching matters.

All the servers run at once (idle ones cost nothing) and the wrk runs are
interleaved, in a new random order each round, so a change in the machine's
load touches all alike. The table gives the median over the rounds of
requests/s, p50 and p99 latency, with the spread (min to max) of requests/s,
the errors summed over rounds (connect, read, write, timeout and non-2xx
answers) and the mean rows per model run read from ``/metrics``. wrk is
closed-loop: each connection sends its next request when the last is
answered, so latency here is what a client waiting for its action sees.

wrk is installed by the benchmark into a cache folder outside the
repository (``--cache``, default ``~/.cache/tfkd/wrk``): ``apt-get download``
of Debian's wrk and libluajit-5.1-2, unpacked with ``dpkg -x``, no root. A
``wrk`` on the PATH is used as it is.

Usage:
    python benchmarks/serve.py [--model DIR] [--rounds 5] [--seconds 10] [--out results/serve.json]
    python benchmarks/serve.py --smoke    # ~2 s of load for each of SMOKE_CONFIGS; a check only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "batched": [],
    "unbatched": ["--max-batch", "1"],
    "asyncio + h11": ["--loop", "asyncio", "--http", "h11"],
    "2 workers": ["--workers", "2"],
    "savedmodel, batched": ["--format", "savedmodel"],
    "savedmodel, unbatched": ["--format", "savedmodel", "--max-batch", "1"],
}
# Both formats, batched and not; --workers and the HTTP stack are served and
# tested in tests/deploy/test_serve.py.
SMOKE_CONFIGS = ("batched", "unbatched", "savedmodel, batched", "savedmodel, unbatched")
BODY = '{"observations": [[0.01, -0.02, 0.03, 0.04]]}'
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max, e.connect, e.read, e.write,
    e.status, e.timeout))
end
""" % BODY


def install_wrk(cache: Path) -> tuple[str, dict]:
    """(wrk executable, environment to run it in): from the PATH, else Debian's package."""
    found = shutil.which("wrk")
    if found:
        return found, dict(os.environ)
    root = cache / "root"
    binary = root / "usr" / "bin" / "wrk"
    if not binary.is_file():
        if not (shutil.which("apt-get") and shutil.which("dpkg")):
            sys.exit("benchmarks/serve.py: wrk is not installed and there is no apt-get/dpkg "
                     "to fetch it; install wrk (https://github.com/wg/wrk) and rerun")
        cache.mkdir(parents=True, exist_ok=True)
        print(f"installing wrk into {cache} (apt-get download, dpkg -x; no root needed)")
        subprocess.run(["apt-get", "download", "wrk", "libluajit-5.1-2"], cwd=cache, check=True,
                       capture_output=True)
        for package in cache.glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(package), str(root)], check=True)
    libraries = [str(path) for path in root.glob("usr/lib/*-linux-gnu")]
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(
        libraries + [os.environ.get("LD_LIBRARY_PATH", "")]))
    return str(binary), env


def demo_export(folder: Path, seed: int) -> Path:
    """tfkd's default CartPole student, freshly initialised, with the files ``tfkd serve``
    loads: student.tflite, saved_model/1/ and export.json."""
    from tfkd.deploy.exporter import write_serving_files
    from tfkd.models import build_student
    from tfkd.rl.seeding import seed_everything

    seed_everything(seed)
    return Path(write_serving_files(build_student((4,), 2, atari=False), "CartPole-v1", folder))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``tfkd serve`` in a subprocess; its output goes to a log file."""

    def __init__(self, model: Path, flags: list[str], log: Path):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tfkd.cli", "serve", "--model", str(model), "--port",
                 str(self.port), "--log-level", "warning", *flags],
                env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"tfkd serve {' '.join(flags)} exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        sys.exit(f"tfkd serve {' '.join(flags)} not ready after 120 s")

    def mean_batch_rows(self) -> float:
        import httpx

        text = httpx.get(self.url + "/metrics").text
        rows = sum(float(v) for v in re.findall(r"^tfkd_batch_rows_sum\S* (\S+)$", text, re.M))
        runs = sum(float(v) for v in re.findall(r"^tfkd_batch_rows_count\S* (\S+)$", text, re.M))
        return rows / runs if runs else float("nan")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def run_wrk(wrk: str, env: dict, script: Path, url: str, connections: int, threads: int,
            seconds: int) -> dict:
    import json

    result = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                             "--timeout", "5s", "-s", str(script), url + "/v1/act"],
                            env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((line for line in result.stdout.splitlines() if line.startswith("WRK_JSON ")),
                None)
    if result.returncode != 0 or line is None:
        sys.exit(f"wrk failed:\n{result.stdout}\n{result.stderr}")
    raw = json.loads(line[len("WRK_JSON "):])
    return {"requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1e3, "p99_ms": raw["p99_us"] / 1e3,
            "max_ms": raw["max_us"] / 1e3, "requests": raw["requests"],
            "errors": sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))}


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="export folder to serve (default: tfkd's CartPole student, "
                             "freshly initialised, exported to TFLite in a temporary folder)")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent connections (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: %(default)s)")
    parser.add_argument("--seconds", type=int, default=10,
                        help="length of each wrk run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="wrk runs per configuration, interleaved (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tfkd" / "wrk",
                        help="where wrk is installed if it is not on the PATH "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo student and of "
                        "the order of the runs (default: %(default)s)")
    parser.add_argument("--out", default="results/serve.json",
                        help="JSON results (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true",
                        help="one round of 2 s for each of four configurations; a check "
                             "that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds = 1, 2
        if args.out == parser.get_default("out"):
            args.out = os.path.join(tempfile.mkdtemp(prefix="tfkd-serve-smoke-"), "serve.json")

    configs = {name: CONFIGS[name] for name in (SMOKE_CONFIGS if args.smoke else CONFIGS)}

    from tqdm import tqdm

    from tfkd import files

    wrk, wrk_env = install_wrk(args.cache)
    with tempfile.TemporaryDirectory(prefix="tfkd-serve-bench-") as scratch:
        scratch = Path(scratch)
        model = args.model or demo_export(scratch / "model", args.seed)
        script = scratch / "act.lua"
        script.write_text(WRK_SCRIPT)
        load_before = load_average()
        servers = {name: Server(model, flags, scratch / f"server-{i}.log")
                   for i, (name, flags) in enumerate(configs.items())}
        runs = {name: [] for name in configs}
        order = list(configs)
        rng = random.Random(args.seed)
        try:
            with tqdm(total=args.rounds * len(order), desc="wrk runs", disable=args.smoke) as bar:
                for _ in range(args.rounds):
                    rng.shuffle(order)
                    for name in order:
                        runs[name].append(run_wrk(wrk, wrk_env, script, servers[name].url,
                                                  args.connections, args.threads, args.seconds))
                        bar.update()
            batch_rows = {name: server.mean_batch_rows() for name, server in servers.items()}
        finally:
            exits = {name: server.stop() for name, server in servers.items()}
        load_after = load_average()

    rows = []
    for name in configs:
        rates = [run["requests_per_s"] for run in runs[name]]
        rows.append({
            "configuration": name, "flags": configs[name],
            "requests_per_s": statistics.median(rates), "requests_per_s_min": min(rates),
            "requests_per_s_max": max(rates),
            "p50_ms": statistics.median(run["p50_ms"] for run in runs[name]),
            "p99_ms": statistics.median(run["p99_ms"] for run in runs[name]),
            "errors": sum(run["errors"] for run in runs[name]),
            "requests": sum(run["requests"] for run in runs[name]),
            "mean_batch_rows": round(batch_rows[name], 2), "exit_status": exits[name],
            "runs": runs[name]})
    by_name = {row["configuration"]: row for row in rows}
    for row in rows:  # against one model run per request, same format
        base = "savedmodel, unbatched" if row["configuration"].startswith("savedmodel") else \
            "unbatched"
        row["x_unbatched"] = row["requests_per_s"] / by_name[base]["requests_per_s"]
    print(f"\n{args.connections} connections, single-observation POST /v1/act, {args.rounds} "
          f"rounds of {args.seconds} s, wrk -t{args.threads}; server and wrk on the same "
          f"{os.cpu_count()} cores; load average {load_before} before, {load_after} after\n")
    print("| configuration | requests/s (median) | min – max | p50 ms | p99 ms | errors "
          "| rows per model run | × unbatched, same format |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['configuration']} | {row['requests_per_s']:,.0f} | "
              f"{row['requests_per_s_min']:,.0f} – {row['requests_per_s_max']:,.0f} | "
              f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} | "
              f"{row['mean_batch_rows']:.1f} | {row['x_unbatched']:.2f} |")
    files.write_json(args.out, {
        "connections": args.connections, "threads": args.threads, "seconds": args.seconds,
        "rounds": args.rounds, "cpu_count": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": load_after, "model": str(args.model) if args.model else
        "demo: tfkd.models.build_student((4,), 2), TFLite and SavedModel", "rows": rows})
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
