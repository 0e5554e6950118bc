"""What every local service provides to the stack manager."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from streamrec.settings import StackSettings
from streamrec.stack.process import ManagedProcess
from streamrec.stack.system import SystemPackage

Say = Callable[[str], None]


class Service(ABC):
    name: str

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir.resolve()

    @property
    def data_dir(self) -> Path:
        return self.state_dir / self.name

    @property
    def marker(self) -> str:
        """A path inside this stack's state folder that appears in the service's command line."""
        return str(self.data_dir)

    def system_packages(self) -> list[SystemPackage]:
        """Binaries the service runs on, installed by the stack manager before anything starts."""
        return []

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Ports the service binds, keyed by their StackSettings field name."""

    @abstractmethod
    def address(self) -> str:
        """What a client connects to."""

    def prepare(self, say: Say) -> None:
        """One-time work before the first start: install, download, format."""

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment."""

    @abstractmethod
    def probe(self, timeout_s: float) -> str | None:
        """None when healthy, otherwise what is wrong; must return within about ``timeout_s``."""

    def cleanup(self) -> None:
        """Remove what the service leaves behind after it stopped."""

    def process(self) -> ManagedProcess:
        argv, env = self.command()
        return ManagedProcess(
            name=self.name,
            argv=argv,
            env=env,
            run_dir=self.state_dir / "run",
            log_path=self.state_dir / "logs" / f"{self.name}.log",
            marker=self.marker,
            cwd=self.state_dir,
        )
