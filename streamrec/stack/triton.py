"""Triton Inference Server from the ``nvidia-pytriton`` wheel, serving ``model_repo/``.

The wheel ships a real ``tritonserver`` (2.51) and the Python backend. What it
needs on this kind of machine (found by trying):

* ``--backend-directory`` pointing at a folder with ``python/libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the stub built for *our* Python version;
* ``LD_LIBRARY_PATH`` with this Python's LIBDIR first (so the stub embeds the same
  CPython), then the wheel's ``nvidia_pytriton.libs``;
* the stub finds the virtualenv's packages through ``PATH`` (venv ``bin`` first),
  not ``PYTHONPATH``;
* ``--disable-auto-complete-config`` halves start-up.

Explicit model control: models are loaded through the repository API (or
``triton_load_models``), so a broken version never takes the server down.
Each stack gets its own shared-memory prefix so ``down`` can remove exactly its
own ``/dev/shm`` leftovers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import httpx

from streamrec.stack.base import Say, Service
from streamrec.stack.process import StackError

_SHM_DIR = Path("/dev/shm")


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as error:  # pragma: no cover - a dependency of the project
        raise StackError("nvidia-pytriton is not installed in this environment; run the setup command") from error
    return Path(pytriton.__file__).resolve().parent


class TritonService(Service):
    name = "triton"

    def ports(self) -> dict[str, int]:
        return {
            "triton_http_port": self.settings.triton_http_port,
            "triton_grpc_port": self.settings.triton_grpc_port,
            "triton_metrics_port": self.settings.triton_metrics_port,
        }

    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.triton_http_port}"

    @property
    def backend_dir(self) -> Path:
        return self.data_dir / "backends"

    @property
    def shm_prefix(self) -> str:
        digest = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:10]
        return f"streamrec_{digest}_"

    def prepare(self, say: Say) -> None:
        root = _pytriton_root() / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise StackError(f"nvidia-pytriton has no Python backend stub for Python {version}")
        target = self.backend_dir / "python"
        target.mkdir(parents=True, exist_ok=True)
        for source in (
            root / "backends" / "python" / "libtriton_python.so",
            root / "backends" / "python" / "triton_python_backend_utils.py",
            stub,
        ):
            destination = target / source.name
            if not destination.exists() or destination.stat().st_size != source.stat().st_size:
                shutil.copy2(source, destination)
        self.settings.model_repo.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        root = _pytriton_root()
        libs = root.parent / "nvidia_pytriton.libs"
        venv_bin = Path(sys.executable).parent
        argv = [
            str(root / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.settings.model_repo.resolve()}",
            f"--backend-directory={self.backend_dir}",
            "--model-control-mode=explicit",
            "--disable-auto-complete-config",
            f"--http-address={self.settings.host}",
            f"--http-port={self.settings.triton_http_port}",
            f"--grpc-address={self.settings.host}",
            f"--grpc-port={self.settings.triton_grpc_port}",
            f"--metrics-address={self.settings.host}",
            f"--metrics-port={self.settings.triton_metrics_port}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--log-verbose=0",
            *(f"--load-model={model}" for model in self.settings.triton_load_models),
        ]
        env = {
            "LD_LIBRARY_PATH": os.pathsep.join(
                filter(None, [sysconfig.get_config_var("LIBDIR"), str(libs), os.environ.get("LD_LIBRARY_PATH")])
            ),
            "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]),
        }
        if "redis" in self.settings.services:  # bert_scorer follows the catalog of this stack's Redis
            env["STREAMREC_REDIS__URL"] = f"redis://{self.settings.host}:{self.settings.redis_port}/0"
        return argv, env

    def probe(self, timeout_s: float) -> str | None:
        try:
            response = httpx.get(f"{self.address()}/v2/health/live", timeout=timeout_s)
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"
        return None if response.status_code == 200 else f"live check answered {response.status_code}"

    def cleanup(self) -> None:
        for leftover in _SHM_DIR.glob(f"{self.shm_prefix}*"):
            leftover.unlink(missing_ok=True)
