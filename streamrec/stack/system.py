"""System packages the local services run on, installed before any service is built or started.

Each service names the binaries it needs with their Debian packages; ``streamrec up`` checks all
of them first and installs the missing ones in one ``apt-get`` call when it runs as root on a
Debian-like machine. Otherwise it stops before starting anything, naming the packages to
install, so a half-started stack never hides a missing dependency.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamrec.stack.process import StackError


@dataclass(frozen=True)
class SystemPackage:
    binary: str
    debian_package: str


def missing(packages: Iterable[SystemPackage]) -> list[SystemPackage]:
    return [package for package in dict.fromkeys(packages) if shutil.which(package.binary) is None]


def ensure_installed(packages: Iterable[SystemPackage], say: Callable[[str], None]) -> None:
    """Install what is missing with apt-get (as root), or raise a StackError that names it."""
    absent = missing(packages)
    if not absent:
        return
    names = sorted({package.debian_package for package in absent})
    binaries = ", ".join(f"`{package.binary}`" for package in absent)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing {' '.join(names)} with apt-get (needed for {binaries}; one time)…")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *names], check=True, env=env)
        except subprocess.CalledProcessError as error:
            raise StackError(
                f"apt-get could not install {' '.join(names)} (exit {error.returncode}); "
                f"install them yourself: `apt-get install {' '.join(names)}`."
            ) from None
        absent = missing(absent)
        if not absent:
            return
        binaries = ", ".join(f"`{package.binary}`" for package in absent)
        raise StackError(f"{binaries} still not on PATH after `apt-get install {' '.join(names)}`.")
    raise StackError(
        f"{binaries} not found. Install first: `sudo apt-get install {' '.join(names)}` "
        "(`streamrec up` installs them itself when run as root on Debian or Ubuntu)."
    )
