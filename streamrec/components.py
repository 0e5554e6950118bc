"""streamrec components (workers, servers) run as child processes: quick-start, tests, benchmarks.

A component is started through the CLI (``python -m streamrec <component> ...``), so the
core package never imports ``serving``, ``streams`` or ``trainer``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx


class ComponentProcess:
    """One ``streamrec ...`` child process with its own environment and log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "ComponentProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen([sys.executable, "-m", "streamrec", *self.args], env=self.env, stdout=log, stderr=log)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (workers commit and leave their group), SIGKILL after ``timeout_s``."""
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL and wait, if it runs: a crash, for the fault tests and benchmarks (``start`` brings it back)."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, url: str, timeout_s: float = 60) -> None:
        """Until ``url`` answers 200; fails early (with the log) if the process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{' '.join(self.args)} exited:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{url} not up within {timeout_s:.0f} s:\n{self.log_tail()}")
