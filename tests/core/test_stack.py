"""The local stack manager: real processes, real ports, real persistence."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamrec.kafka_client import client_config
from streamrec.settings import Settings
from streamrec.stack import LocalStack, StackError
from streamrec.stack.process import ManagedProcess
from streamrec.stack.isolated import isolated_stack_settings, stack_environment
from streamrec.store.connection import connect_blocking

STREAMREC = [sys.executable, "-m", "streamrec"]


def test_status_command_reports_each_service_and_exits_zero_when_healthy(local_stack, settings):
    result = subprocess.run(
        [*STREAMREC, "status", "--json"], env=stack_environment(local_stack.settings), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = {s["name"]: s for s in json.loads(result.stdout)}
    assert set(statuses) == {"kafka", "redis", "triton"}
    assert all(s["healthy"] for s in statuses.values())
    assert statuses["kafka"]["address"] == settings.bootstrap_servers


def test_status_exits_nonzero_when_nothing_runs(tmp_path):
    settings = isolated_stack_settings(tmp_path / "idle")
    result = subprocess.run([*STREAMREC, "status"], env=stack_environment(settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "not running" in result.stdout


def test_up_is_idempotent(local_stack):
    pids = {s.name: s.pid for s in local_stack.status()}
    statuses = local_stack.up()
    assert {s.name: s.pid for s in statuses} == pids


def test_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        stack = LocalStack(isolated_stack_settings(tmp_path / "s", redis_port=port, services=["redis"]))
        with pytest.raises(StackError, match=f"port {port} .* already in use.*STREAMREC_STACK__REDIS_PORT"):
            stack.up()


def test_down_then_up_keeps_topics_and_redis_data(tmp_path):
    stack = LocalStack(isolated_stack_settings(tmp_path / "persist", services=["kafka", "redis"]))
    settings = Settings(stack=stack.settings)
    try:
        stack.up()
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(client_config(settings.kafka, client="test"))
        admin.create_topics([NewTopic("persist.check", 1, 1)])["persist.check"].result(30)
        producer = Producer({**client_config(settings.kafka, client="test"), "acks": "all"})
        producer.produce("persist.check", b"survives restarts")
        assert producer.flush(30) == 0
        store = connect_blocking(settings.redis)
        store.set("persist:key", "kept")
        store.close()

        outcome = stack.down()
        assert outcome == {"redis": "stopped", "kafka": "stopped"}
        assert not stack.healthy()

        stack.up()
        consumer = Consumer({**client_config(settings.kafka, client="test"), "group.id": "persist", "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition("persist.check", 0, 0)])
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        consumer.close()
        assert message is not None and message.value() == b"survives restarts"
        assert connect_blocking(settings.redis).get("persist:key") == b"kept"
    finally:
        stack.down()


def test_down_removes_only_this_stacks_triton_shared_memory(local_stack, tmp_path):
    other = LocalStack(isolated_stack_settings(tmp_path / "other", services=["triton"]))
    ours, theirs = other.service("triton"), local_stack.service("triton")
    assert ours.shm_prefix != theirs.shm_prefix
    leftover = f"/dev/shm/{ours.shm_prefix}region_1"
    foreign = f"/dev/shm/{theirs.shm_prefix}test_{uuid.uuid4().hex}"
    for path in (leftover, foreign):
        open(path, "wb").close()
    try:
        other.down()
        assert not os.path.exists(leftover)
        assert os.path.exists(foreign)
    finally:
        os.unlink(foreign)


def _stubborn(tmp_path) -> ManagedProcess:
    marker = str(tmp_path / "stubborn-marker")
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    return ManagedProcess(
        name="stubborn", argv=[sys.executable, "-c", script, marker], run_dir=tmp_path / "run",
        log_path=tmp_path / "logs" / "stubborn.log", marker=marker,
    )


def test_stop_escalates_to_sigkill_after_the_grace_period(tmp_path):
    process = _stubborn(tmp_path)
    pid = process.start()
    time.sleep(0.5)  # let it install its SIGTERM handler
    started = time.monotonic()
    assert process.stop(timeout_s=1.0) == "killed after timeout"
    assert time.monotonic() - started >= 1.0
    assert process.pid() is None
    _, status = os.waitpid(pid, 0)  # our child: reap it and read how it ended
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_stale_pid_file_never_signals_an_unrelated_process(tmp_path):
    process = _stubborn(tmp_path)
    process.run_dir.mkdir(parents=True)
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        process.pid_path.write_text(str(unrelated.pid))
        assert process.pid() is None
        assert process.stop(timeout_s=1.0) == "not running"
        assert unrelated.poll() is None
    finally:
        unrelated.send_signal(signal.SIGKILL)
        unrelated.wait()


def test_a_process_just_started_is_not_taken_for_a_stale_pid(tmp_path):
    """/proc/PID/cmdline reads empty for a moment after exec; ``start`` must not return inside that window."""
    for attempt in range(10):
        marker = str(tmp_path / f"sleeper-{attempt}")
        process = ManagedProcess(
            name=f"sleeper-{attempt}", argv=[sys.executable, "-c", "import time; time.sleep(30)", marker],
            run_dir=tmp_path / "run", log_path=tmp_path / "logs" / "sleeper.log", marker=marker,
        )
        pid = process.start()
        try:
            assert not process.exited() and process.pid() == pid
        finally:
            process.stop(timeout_s=5.0)
            os.kill(pid, signal.SIGKILL)  # also when the test failed and stop() lost track of it
            os.waitpid(pid, 0)
