"""A trainer killed (SIGKILL) during training or during publishing leaves serving untouched, no
partial version folder, and the next cycle resumes from the served version's offsets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from streamrec.settings import REPO_ROOT
from streamrec.stack.isolated import stack_environment
from tests.trainer.incremental.conftest import make_trainer_model, trainer_settings
from trainer.incremental.cycle import run_cycle

pytestmark = pytest.mark.stack


def run_until(settings, phase: str, model: str, marker) -> subprocess.Popen:
    env = stack_environment(settings.stack)
    for name, value in settings.trainer.model_dump().items():
        env[f"STREAMREC_TRAINER__{name.upper()}"] = str(value)
    env["STREAMREC_RECS__SCORER_MODEL"] = settings.recs.scorer_model
    process = subprocess.Popen([sys.executable, "-m", "tests.trainer.incremental.crash_runner", phase, str(marker)], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"trainer exited with {process.returncode} before {phase}: {process.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"trainer never reached {phase}")
        time.sleep(0.1)
    return process


@pytest.mark.parametrize("phase", ["train", "publish"])
def test_a_trainer_killed_mid_cycle_changes_nothing_and_the_next_run_resumes(settings, amazon_text, send_sequences, tmp_path,
                                                                          phase):
    name = f"trainer_kill_{phase}_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name, amazon_text)
    config = trainer_settings(settings, name)
    sent = send_sequences(500 if phase == "train" else 560, 50)
    process = run_until(config, phase, name, tmp_path / "marker")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    staging = list((settings.stack.model_repo / ".staging").glob(f"{name}-*"))
    if phase == "publish":
        assert staging, "the kill did not happen during the publish"
        assert not (staging[0] / "model.py").exists()  # caught half-written
    assert registry.versions() == [1] and not (registry.model_dir / "2").exists()  # no partial version folder
    assert registry.served_version() == 1

    result = run_cycle(config, say=print)
    assert result.status == "published" and result.version == 2
    assert not list((settings.stack.model_repo / ".staging").glob(f"{name}-*"))  # leftovers removed
    lineage = registry.metadata(2).lineage
    assert lineage["start_offsets"] == registry.metadata(1).lineage["offsets"]  # resumed exactly
    assert lineage["events_used"] == sent  # every event since version 1, none twice, none lost
    assert registry.metadata(2).kind == "sequence" and lineage["counts"]["users"] == 50
