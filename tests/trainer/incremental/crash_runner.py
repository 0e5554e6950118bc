"""A trainer cycle in its own process that stops at a chosen point so a test can SIGKILL it there.

``python -m tests.trainer.incremental.crash_runner {train|publish} MARKER``: settings come from the
environment (STREAMREC_*); when the cycle reaches the point it writes MARKER and sleeps.
Only the timing is changed: the cycle, Kafka, Redis and Triton are the real ones.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trainer.incremental.cycle as cycle_module
from streamrec.settings import Settings
from trainer.incremental.cycle import _default_train, run_cycle


def main(phase: str, marker: Path) -> None:
    def stop_here() -> None:
        marker.write_text("reached")
        time.sleep(600)

    train = _default_train
    if phase == "train":
        def train(model, rows, config, say):  # noqa: F811 - the slow variant
            _default_train(model, rows, config, say)
            stop_here()
    elif phase == "publish":
        real_write = cycle_module.write_sequence_folder

        def slow_write(folder, served, metadata):
            real_write(folder, served, metadata)
            (folder / "model.py").unlink()  # as if killed before the last file
            stop_here()

        cycle_module.write_sequence_folder = slow_write
    else:
        raise SystemExit(f"unknown phase {phase}")
    run_cycle(Settings(), train=train, say=print)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
