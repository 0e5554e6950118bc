"""Background services in their own process groups, tracked by PID files.

A service started here survives the CLI that started it (``streamrec up``
returns), so its identity is kept on disk: ``<state>/run/<name>.pid`` plus a
marker string that must appear in the process's command line. The marker (a
path inside the stack's state folder) stops ``down`` from ever signalling an
unrelated process that happens to reuse a stale PID, and keeps two stacks on
one machine (a developer's and the test session's) apart.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A local-stack problem with a message that says what to do."""


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    run_dir: Path
    log_path: Path
    marker: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def pid(self) -> int | None:
        """PID of our running process, or None (stale PID files are removed)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _cmdline_contains(pid, self.marker):
            return pid
        self.pid_path.unlink(missing_ok=True)
        return None

    def start(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # own process group: `down` signals the whole tree
            )
        self.pid_path.write_text(str(process.pid))
        _wait_for_exec(process, self.marker)
        return process.pid

    def exited(self) -> bool:
        """True when the process we started is gone (it may have crashed on start-up)."""
        return self.pid() is None

    def stop(self, timeout_s: float) -> str:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``; returns what happened."""
        pid = self.pid()
        if pid is None:
            return "not running"
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                self.pid_path.unlink(missing_ok=True)
                return "stopped"
            time.sleep(0.1)
        _signal_group(pid, signal.SIGKILL)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        self.pid_path.unlink(missing_ok=True)
        return "killed after timeout"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # zombies count as gone
    except FileNotFoundError:
        return False


def _wait_for_exec(process: subprocess.Popen, marker: str, timeout_s: float = 5.0) -> None:
    """Wait until the new process's command line shows the marker.

    ``/proc/<pid>/cmdline`` reads empty for a moment after exec; a ``pid()`` in that window
    would take our own new process for a stale PID, delete its PID file and report it exited.
    """
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and not _cmdline_contains(process.pid, marker) and time.monotonic() < deadline:
        time.sleep(0.01)


def _cmdline_contains(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return marker.encode() in cmdline.read() and _alive(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, chosen below the kernel's ephemeral range.

    A port the kernel hands out for outgoing connections can be taken by any client socket while
    its server is down: a Redis or Kafka restarted on it after a kill then fails with "address
    already in use" (seen in the fault benchmark, with hundreds of reconnects a second). Ports
    below that range are only ever taken by an explicit bind.
    """
    low, _ = _ephemeral_range()
    candidates = list(range(max(1024, low - 12_000), low)) if low > 2048 else []
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # everything below is taken: any free one
        sock.bind((host, 0))
        return sock.getsockname()[1]


def require_binary(binary: str, debian_package: str) -> str:
    """Path of ``binary``, which :func:`streamrec.stack.system.ensure_installed` has put in place."""
    path = shutil.which(binary)
    if path:
        return path
    raise StackError(f"`{binary}` was not found. Install it first: `sudo apt-get install {debian_package}`.")
