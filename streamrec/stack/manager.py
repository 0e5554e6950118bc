"""The embedded local stack: ``up``, ``down`` and ``status`` for Kafka, Redis and Triton.

The same manager runs a developer's stack (``streamrec up``) and the test
session's (own ports, own state folder), so tests never touch a running stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from streamrec.settings import StackSettings
from streamrec.stack.base import Say, Service
from streamrec.stack.kafka import KafkaService
from streamrec.stack.process import StackError, port_is_free
from streamrec.stack.redis import RedisService
from streamrec.stack.system import ensure_installed
from streamrec.stack.triton import TritonService

SERVICE_TYPES: dict[str, Callable[[StackSettings], Service]] = {
    "kafka": KafkaService,
    "redis": RedisService,
    "triton": TritonService,
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    healthy: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "pid": self.pid, "healthy": self.healthy, "detail": self.detail}


class LocalStack:
    def __init__(self, settings: StackSettings, say: Say = lambda message: None) -> None:
        self.settings = settings
        self.say = say
        self.services: list[Service] = [SERVICE_TYPES[name](settings) for name in settings.services]

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def up(self) -> list[ServiceStatus]:
        """Install missing system packages, then start every configured service that is not
        already running and wait until each is healthy."""
        ensure_installed((package for service in self.services for package in service.system_packages()), self.say)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        started: list[tuple[Service, float]] = []
        for service in self.services:
            process = service.process()
            if process.pid() is not None:
                self.say(f"{service.name}: already running (pid {process.pid()})")
                continue
            self._check_ports(service)
            service.prepare(self.say)
            service.cleanup()
            process = service.process()  # after prepare: the command may depend on what it made
            pid = process.start()
            self.say(f"{service.name}: started (pid {pid}), log {process.log_path}")
            started.append((service, time.monotonic()))
        for service, since in started:
            self._wait_healthy(service, since)
        return self.status()

    def _check_ports(self, service: Service) -> None:
        for setting, port in service.ports().items():
            if not port_is_free(self.settings.host, port):
                raise StackError(
                    f"{service.name}: port {port} on {self.settings.host} is already in use by another process. "
                    f"Stop that process or choose another port: STREAMREC_STACK__{setting.upper()}=<free port>."
                )

    def _wait_healthy(self, service: Service, since: float) -> None:
        deadline = since + self.settings.start_timeout_s
        process = service.process()
        problem: str | None = "not probed"
        while time.monotonic() < deadline:
            if process.exited():
                raise StackError(f"{service.name} exited during start-up; last log lines:\n{process.log_tail(30)}")
            problem = service.probe(timeout_s=2.0)
            if problem is None:
                self.say(f"{service.name}: healthy at {service.address()} ({time.monotonic() - since:.1f} s)")
                return
            time.sleep(0.25)
        raise StackError(
            f"{service.name} not healthy after {self.settings.start_timeout_s:.0f} s ({problem}); "
            f"last log lines:\n{process.log_tail(30)}"
        )

    def down(self) -> dict[str, str]:
        """Stop services in reverse start order (SIGTERM, then SIGKILL after the grace period)."""
        outcome: dict[str, str] = {}
        for service in reversed(self.services):
            outcome[service.name] = service.process().stop(self.settings.stop_timeout_s)
            service.cleanup()
            self.say(f"{service.name}: {outcome[service.name]}")
        return outcome

    def status(self) -> list[ServiceStatus]:
        statuses = []
        for service in self.services:
            pid = service.process().pid()
            if pid is None:
                statuses.append(ServiceStatus(service.name, service.address(), None, False, "not running"))
                continue
            problem = service.probe(timeout_s=3.0)
            statuses.append(
                ServiceStatus(service.name, service.address(), pid, problem is None, problem or "healthy")
            )
        return statuses

    def healthy(self) -> bool:
        return all(status.healthy for status in self.status())

