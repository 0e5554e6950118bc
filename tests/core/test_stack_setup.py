"""A fresh machine: `streamrec up` installs missing system packages before it builds or starts
any service, and says what to install where it cannot."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from streamrec.stack import LocalStack, StackError
from streamrec.stack.base import Service
from streamrec.stack.isolated import isolated_stack_settings

BINARIES_KEPT = ("java", "mvn")  # Kafka's; present on this machine, so only Redis's package is missing


def _path_without_redis(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH folder with a recording stand-in for apt-get and the binaries kept, but no redis-server."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "events.log"
    apt = folder / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "apt-get $*" >> {record}\n')
    apt.chmod(apt.stat().st_mode | stat.S_IEXEC)
    for name in BINARIES_KEPT:
        found = shutil.which(name)
        if found:
            (folder / name).symlink_to(found)
    return folder, record


def _record_commands(monkeypatch: pytest.MonkeyPatch, record: Path) -> None:
    built = Service.process

    def recording(self: Service):
        with open(record, "a") as log:
            log.write(f"command {self.name}\n")
        return built(self)

    monkeypatch.setattr(Service, "process", recording)


def test_up_installs_missing_packages_before_any_service_command(tmp_path, monkeypatch):
    folder, record = _path_without_redis(tmp_path)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    stack = LocalStack(isolated_stack_settings(tmp_path / "state"))  # kafka, redis, triton
    _record_commands(monkeypatch, record)

    with pytest.raises(StackError, match="`redis-server` still not on PATH after `apt-get install redis-server`"):
        stack.up()

    lines = record.read_text().splitlines()
    assert lines[:2] == ["apt-get update -qq", "apt-get install -y -qq --no-install-recommends redis-server"], lines
    assert not any(line.startswith("command") for line in lines), f"a service command was built: {lines}"
    assert not (tmp_path / "state" / "logs").exists(), "a service was started"


def test_up_without_root_names_the_package_to_install(tmp_path, monkeypatch):
    folder, record = _path_without_redis(tmp_path)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    stack = LocalStack(isolated_stack_settings(tmp_path / "state", services=["redis"]))

    with pytest.raises(StackError, match=r"`redis-server` not found\. Install first: `sudo apt-get install redis-server`"):
        stack.up()
    assert not record.exists(), "apt-get must not run without root"


def test_failed_install_is_a_clear_error(tmp_path, monkeypatch):
    folder, _ = _path_without_redis(tmp_path)
    (folder / "apt-get").write_text("#!/bin/sh\nexit 100\n")
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    stack = LocalStack(isolated_stack_settings(tmp_path / "state", services=["redis"]))

    with pytest.raises(StackError, match=r"apt-get could not install redis-server \(exit 100\)"):
        stack.up()
