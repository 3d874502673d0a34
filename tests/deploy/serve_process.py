"""`tfkd serve` in a subprocess, for the serving tests.

A module of its own, not conftest.py: test modules import it by name, and
another folder's conftest.py would shadow this one's under that name.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`tfkd serve` in a subprocess on a free loopback port."""

    def __init__(self, model: str, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.terminated = False
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tfkd.cli", "serve", "--model", str(model), "--port",
             str(self.port), "--log-level", "warning", *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 60.0) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tfkd serve exited {self.process.returncode}:\n"
                                     f"{self.process.stdout.read()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"tfkd serve not ready after {timeout} s")

    def terminate(self) -> None:
        """SIGTERM, once."""
        if not self.terminated:
            self.terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM (unless sent); (exit status, output)."""
        self.terminate()
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
            raise AssertionError(f"tfkd serve did not exit {timeout} s after SIGTERM:\n{output}")
        return self.process.returncode, output


@contextlib.contextmanager
def running(model, *flags):
    """A ready server; stopped with SIGTERM at the end, which must exit 0."""
    server = Server(model, *flags)
    try:
        yield server.wait_ready()
    finally:
        status, output = server.stop()
    assert status == 0, output
