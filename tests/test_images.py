"""Processes whose images carry no model stack must not import it: the collector and the streams
worker run from the small app image, which needs neither torch nor transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamrec.settings import REPO_ROOT

HEAVY = ("torch", "transformers", "peft", "safetensors")


@pytest.mark.parametrize(
    "module",
    ["serving.collector.app", "serving.cli", "streams.app", "streams.cli", "streamrec.cli", "serving.recs.worker", "serving.api.app",
     "serving.ops.app", "streams.attribution.app"],
)
def test_light_processes_do_not_import_the_model_stack(module):
    probe = f"import sys, {module}; print(','.join(name for name in {HEAVY!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing {module} imports {result.stdout.strip()}"


def test_the_probe_sees_an_import_of_torch():
    probe = f"import sys, trainer.offline.finetune; print(','.join(name for name in {HEAVY!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert "torch" in result.stdout
