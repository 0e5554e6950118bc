"""The production compose file, checked by parsing it (no Docker engine needed).

``compose_problems`` returns every problem it finds as a sentence; the file must
have none, and each negative test breaks a copy of the parsed file in one way to
show that the checker notices.
"""

from __future__ import annotations

import copy
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath

import pytest
import typer
import yaml

from streamrec.settings import env_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"

EXPECTED_SERVICES = {
    "kafka", "redis", "topics", "triton", "collector", "streams", "api", "trainer", "ops", "prometheus", "grafana"
}
ONE_SHOT = {"topics"}  # run to completion; everything else is long-running
# What shops and operators call from outside; everything else stays on the compose network, or
# (operators' own tools) on the host's loopback interface.
PUBLIC_SERVICES = {"collector", "api", "ops"}
APP_IMAGE_SERVICES = {"topics", "collector", "streams", "api", "trainer", "ops"}
TRITON_BASE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# `streamrec` command groups that other issues are building; once a group is
# registered its sub-command is checked like the others.
PENDING_CLI_GROUPS = {"streams", "api", "trainer", "ops"}
# Settings whose value is an address: each host in it must be a compose service.
ADDRESS_SETTINGS = {
    "STREAMREC_KAFKA__BOOTSTRAP_SERVERS",
    "STREAMREC_REDIS__URL",
    "STREAMREC_TRITON__HTTP_URL",
    "STREAMREC_TRITON__GRPC_URL",
    "STREAMREC_OPS__COLLECTOR_URL",
    "STREAMREC_OPS__API_URL",
    "STREAMREC_OPS__STREAMS_METRICS_URL",
    "STREAMREC_OPS__RECS_METRICS_URL",
    "STREAMREC_OPS__TRAINER_METRICS_URL",
    "STREAMREC_OPS__TRITON_METRICS_URL",
}


# ---------------------------------------------------------------------------- helpers


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def environment(service: dict) -> dict[str, str | None]:
    """A service's environment as a dict, whichever of the two compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def depends_on(service: dict) -> dict[str, str]:
    """Target -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every volume entry, short or long syntax."""
    found = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
            found.append((source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            found.append((entry.get("source", ""), entry["target"], bool(entry.get("read_only"))))
    return found


def is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def command_words(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def dockerfile_path(build: dict | str, root: Path) -> Path:
    if isinstance(build, str):
        return root / build / "Dockerfile"
    return root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def dockerfile_bases(path: Path) -> list[str]:
    """Images of the FROM lines (stage names and --platform flags dropped, ARG defaults resolved)."""
    args: dict[str, str] = {}
    bases = []
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "ARG" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            args.setdefault(name, value)
        elif words and words[0].upper() == "FROM":
            image = next(word for word in words[1:] if not word.startswith("--"))
            bases.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image))
    return bases


def cli_commands() -> dict[str, set[str]]:
    """Sub-commands of every registered `streamrec` command group (core and entry points)."""
    from streamrec.cli import app

    root = typer.main.get_group(app)
    groups = {name: set(command.commands) for name, command in root.commands.items() if hasattr(command, "commands")}
    groups[""] = set(root.commands)
    for entry in entry_points(group="streamrec.cli"):
        groups[entry.name] = set(typer.main.get_group(entry.load()).commands)
    return groups


def scrape_targets(config: dict) -> list[str]:
    return [
        target
        for job in config.get("scrape_configs") or []
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    ]


def host_ports(service: dict) -> list[int]:
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                ports.append(int(port["published"]))
        elif ":" in str(port):
            ports.append(int(str(port).split("/")[0].split(":")[-2]))
    return ports


def published_on_every_interface(service: dict) -> list[str]:
    """Published ports not bound to a loopback address (reachable by anyone who reaches the host)."""
    exposed = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            host_ip = port.get("host_ip", "")
        else:
            parts = str(port).split("/")[0].split(":")
            host_ip = ":".join(parts[:-2]) if len(parts) > 2 else ""
        if host_ip not in ("127.0.0.1", "::1", "localhost"):
            exposed.append(str(port.get("published") if isinstance(port, dict) else port))
    return exposed


def container_ports(service: dict) -> set[int]:
    ports = {int(str(port).split("/")[0]) for port in service.get("expose") or []}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


# ---------------------------------------------------------------------------- the checker


def compose_problems(compose: dict, root: Path = ROOT) -> list[str]:
    """Everything wrong with a parsed compose file, one sentence per problem."""
    problems: list[str] = []
    services: dict[str, dict] = compose.get("services") or {}
    declared_volumes = set(compose.get("volumes") or {})
    settings = env_names()

    for name in sorted(EXPECTED_SERVICES - set(services)):
        problems.append(f"service {name!r} is missing")

    published: dict[int, str] = {}
    for name, service in services.items():
        long_running = name not in ONE_SHOT

        # Health and restart policy.
        healthcheck = service.get("healthcheck") or {}
        test = healthcheck.get("test")
        if long_running and (not test or healthcheck.get("disable") or test in (["NONE"], "NONE")):
            problems.append(f"{name}: long-running service without a healthcheck")
        if isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            problems.append(f"{name}: healthcheck test must start with CMD or CMD-SHELL, not {test[0]!r}")
        restart = service.get("restart")
        if long_running and restart not in ("unless-stopped", "always"):
            problems.append(f"{name}: long-running service should restart unless-stopped, has {restart!r}")
        if not long_running and restart != "no":
            problems.append(f"{name}: one-shot service must have restart 'no', has {restart!r}")
        if long_running and "stop_grace_period" not in service:
            problems.append(f"{name}: no stop_grace_period")
        if (service.get("logging") or {}).get("options", {}).get("max-size") is None:
            problems.append(f"{name}: logs are not size-limited (logging.options.max-size)")

        # Dependencies: real targets, waited for by health or completion.
        for target, condition in depends_on(service).items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target!r}")
                continue
            wanted = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            if condition != wanted:
                problems.append(f"{name}: depends on {target!r} with {condition!r}, should be {wanted!r}")

        # Volumes: named ones declared at top level.
        for source, target, _ in mounts(service):
            if is_named_volume(source) and source not in declared_volumes:
                problems.append(f"{name}: volume {source!r} (at {target}) is not declared under top-level volumes")

        # Environment: every STREAMREC_* name is a real setting; values are strings.
        env = environment(service)
        for key, value in env.items():
            if key.startswith("STREAMREC_") and key not in settings:
                problems.append(f"{name}: {key} is not a setting (see `streamrec config`)")
            if value is not None and not isinstance(value, str):
                problems.append(f"{name}: {key} must be quoted as a string, is {type(value).__name__}")
            if key in ADDRESS_SETTINGS and isinstance(value, str):
                for host in re.findall(r"(?:^|//|,)([A-Za-z][\w.-]*):\d+", value):
                    if host not in services:
                        problems.append(f"{name}: {key} points at {host!r}, which is not a service")

        # Host ports: only what users call is reachable from outside; each published once.
        if name not in PUBLIC_SERVICES:
            for port in published_on_every_interface(service):
                problems.append(f"{name}: publishes {port} on every host interface (internal only, or bind 127.0.0.1)")
        for port in host_ports(service):
            if port in published:
                problems.append(f"{name}: host port {port} is already published by {published[port]}")
            published.setdefault(port, name)

        # Images that are built: their Dockerfile exists.
        if "build" in service and not dockerfile_path(service["build"], root).is_file():
            problems.append(f"{name}: Dockerfile {dockerfile_path(service['build'], root)} does not exist")

    problems += _app_problems(services, root)
    problems += _kafka_problems(services.get("kafka") or {})
    problems += _redis_problems(services.get("redis") or {})
    problems += _triton_problems(services.get("triton") or {}, root)
    problems += _prometheus_problems(services, root)
    return problems


def _app_problems(services: dict[str, dict], root: Path) -> list[str]:
    problems = []
    commands = cli_commands()
    for name in sorted(APP_IMAGE_SERVICES & set(services)):
        service = services[name]
        build = service.get("build")
        if not build or dockerfile_path(build, root) != root / "docker" / "app.Dockerfile":
            problems.append(f"{name}: should be built from docker/app.Dockerfile")
        words = command_words(service)
        if len(words) < 2:
            problems.append(f"{name}: command should be `<group> <command>` of the streamrec CLI, is {words}")
            continue
        group, command = words[0], words[1]
        if group in commands:
            if command not in commands[group]:
                problems.append(f"{name}: `streamrec {group} {command}` is not a command")
        elif group not in PENDING_CLI_GROUPS and group not in commands[""]:
            problems.append(f"{name}: `streamrec {group}` is not a command group")
    return problems


def _kafka_problems(kafka: dict) -> list[str]:
    problems = []
    if not str(kafka.get("image", "")).startswith("apache/kafka:"):
        problems.append(f"kafka: image should be apache/kafka, is {kafka.get('image')!r}")
    env = environment(kafka)
    roles = set(str(env.get("KAFKA_PROCESS_ROLES", "")).split(","))
    if roles != {"broker", "controller"}:
        problems.append(f"kafka: KAFKA_PROCESS_ROLES should be broker,controller (KRaft), is {sorted(roles)}")
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES")
    if not controller or f"{controller}://" not in str(env.get("KAFKA_LISTENERS", "")):
        problems.append("kafka: KAFKA_LISTENERS has no listener named by KAFKA_CONTROLLER_LISTENER_NAMES")
    if not env.get("KAFKA_CONTROLLER_QUORUM_VOTERS"):
        problems.append("kafka: KAFKA_CONTROLLER_QUORUM_VOTERS is not set")
    if str(env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")).lower() != "false":
        problems.append("kafka: KAFKA_AUTO_CREATE_TOPICS_ENABLE must be false (the topics service creates them)")
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        if str(env.get(key)) != "1":
            problems.append(f"kafka: {key} must be 1 on a single node")
    data_dir = env.get("KAFKA_LOG_DIRS")
    if not any(is_named_volume(s) and t == data_dir for s, t, _ in mounts(kafka)):
        problems.append(f"kafka: KAFKA_LOG_DIRS ({data_dir}) is not on a named volume")
    return problems


def _redis_problems(redis: dict) -> list[str]:
    problems = []
    words = command_words(redis)
    if not any(a == "--appendonly" and b == "yes" for a, b in zip(words, words[1:])):
        problems.append("redis: command lacks --appendonly yes")
    if not any(is_named_volume(s) and t == "/data" for s, t, _ in mounts(redis)):
        problems.append("redis: /data is not on a named volume")
    return problems


def _triton_problems(triton: dict, root: Path) -> list[str]:
    problems = []
    if "build" in triton:
        path = dockerfile_path(triton["build"], root)
        bases = dockerfile_bases(path) if path.is_file() else []
        if TRITON_BASE not in bases:
            problems.append(f"triton: {path.name} is not FROM {TRITON_BASE} (FROM {bases})")
    elif triton.get("image") != TRITON_BASE:
        problems.append(f"triton: image should be built FROM {TRITON_BASE}")
    devices = (((triton.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
        problems.append("triton: no nvidia GPU reservation under deploy.resources.reservations.devices")
    repo = [source for source, target, _ in mounts(triton) if target == "/models"]
    if not repo or Path(repo[0]).name != "model_repo":
        problems.append("triton: ./model_repo is not mounted at /models")
    if "--model-repository=/models" not in command_words(triton):
        problems.append("triton: command does not serve --model-repository=/models")
    return problems


def _prometheus_problems(services: dict[str, dict], root: Path) -> list[str]:
    problems = []
    prometheus = services.get("prometheus") or {}
    configs = [s for s, t, _ in mounts(prometheus) if t == "/etc/prometheus/prometheus.yml"]
    if not configs:
        return ["prometheus: no config mounted at /etc/prometheus/prometheus.yml"]
    path = root / configs[0]
    if not path.is_file():
        return [f"prometheus: config {configs[0]} does not exist"]
    config = yaml.safe_load(path.read_text())
    # Rule files resolve against the config's folder, in the repository and in the container alike.
    container_dir = PurePosixPath("/etc/prometheus")
    mounted = {target: source for source, target, _ in mounts(prometheus)}
    for rule_file in config.get("rule_files") or []:
        in_repo = (path.parent / rule_file).resolve()
        source = mounted.get(str(container_dir / rule_file))
        if not in_repo.is_file():
            problems.append(f"prometheus: rule file {rule_file} does not exist next to {configs[0]}")
        elif source is None or (root / source).resolve() != in_repo:
            problems.append(f"prometheus: rule file {rule_file} is not mounted at {container_dir / rule_file}")
    for target in scrape_targets(config):
        host, _, port = target.rpartition(":")
        if host == "localhost":  # Prometheus itself
            continue
        if host not in services:
            problems.append(f"prometheus: scrape target {target} is not a service")
        elif int(port) not in container_ports(services[host]):
            problems.append(f"prometheus: {host} does not expose port {port} (scrape target {target})")
    return problems


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_compose_file_has_no_problems(compose):
    assert compose_problems(compose) == []


def test_trainer_and_triton_share_the_model_repository(compose):
    services = compose["services"]
    triton = {t: (s, ro) for s, t, ro in mounts(services["triton"])}["/models"]
    trainer = {t: (s, ro) for s, t, ro in mounts(services["trainer"])}
    repo_setting = environment(services["trainer"])["STREAMREC_TRAINER__MODEL_REPO"]
    source, read_only = trainer[repo_setting]
    assert source == triton[0] and not read_only


def test_app_dockerfile_runs_the_cli_as_a_non_root_user():
    text = (ROOT / "docker" / "app.Dockerfile").read_text()
    assert all(base.startswith("python:3.11-slim") for base in dockerfile_bases(ROOT / "docker" / "app.Dockerfile"))
    final_stage = text.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["streamrec"\]', final_stage, flags=re.MULTILINE)


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".streamrec", ".cache", ".git", "tests"} <= ignored
    assert "README.md" not in ignored and "pyproject.toml" not in ignored  # needed by `pip install .`


def test_checker_catches_a_misspelt_setting(compose):
    broken = copy.deepcopy(compose)
    env = broken["services"]["collector"]["environment"]
    env["STREAMREC_COLLECTOR__PROT"] = env.pop("STREAMREC_COLLECTOR__PORT")
    assert compose_problems(broken) == [
        "collector: STREAMREC_COLLECTOR__PROT is not a setting (see `streamrec config`)"
    ]


def _drop_healthcheck(c):
    del c["services"]["streams"]["healthcheck"]


def _unknown_dependency(c):
    c["services"]["api"]["depends_on"]["cache"] = {"condition": "service_healthy"}


def _started_not_healthy(c):
    c["services"]["api"]["depends_on"]["redis"] = {"condition": "service_started"}


def _wait_for_one_shot_health(c):
    c["services"]["collector"]["depends_on"]["topics"] = {"condition": "service_healthy"}


def _undeclared_volume(c):
    del c["volumes"]["redis-data"]


def _no_gpu(c):
    del c["services"]["triton"]["deploy"]


def _no_aof(c):
    c["services"]["redis"]["command"] = ["redis-server"]


def _zookeeper_mode(c):
    del c["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def _missing_dockerfile(c):
    c["services"]["triton"]["build"]["dockerfile"] = "docker/tritonserver.Dockerfile"


def _client_points_nowhere(c):
    c["services"]["streams"]["environment"]["STREAMREC_REDIS__URL"] = "redis://cache:6379/0"


def _unquoted_value(c):
    c["services"]["collector"]["environment"]["STREAMREC_COLLECTOR__PORT"] = 8080


def _missing_service(c):
    del c["services"]["prometheus"]


def _typo_in_command(c):
    c["services"]["topics"]["command"] = ["topics", "craete"]


def _rules_not_mounted(c):
    volumes = c["services"]["prometheus"]["volumes"]
    volumes[:] = [v for v in volumes if "alerts.yml" not in str(v)]


def _triton_published(c):
    c["services"]["triton"]["ports"] = ["8000:8000"]


def _port_clash(c):
    c["services"]["api"]["ports"] = ["8080:8090"]


BREAKAGES = [
    (_drop_healthcheck, "streams: long-running service without a healthcheck"),
    (_unknown_dependency, "api: depends on unknown service 'cache'"),
    (_started_not_healthy, "api: depends on 'redis' with 'service_started', should be 'service_healthy'"),
    (_wait_for_one_shot_health, "should be 'service_completed_successfully'"),
    (_undeclared_volume, "redis: volume 'redis-data' (at /data) is not declared"),
    (_no_gpu, "triton: no nvidia GPU reservation"),
    (_no_aof, "redis: command lacks --appendonly yes"),
    (_zookeeper_mode, "kafka: KAFKA_PROCESS_ROLES should be broker,controller"),
    (_missing_dockerfile, "triton: Dockerfile"),
    (_client_points_nowhere, "streams: STREAMREC_REDIS__URL points at 'cache'"),
    (_unquoted_value, "collector: STREAMREC_COLLECTOR__PORT must be quoted"),
    (_missing_service, "service 'prometheus' is missing"),
    (_typo_in_command, "topics: `streamrec topics craete` is not a command"),
    (_port_clash, "api: host port 8080 is already published by collector"),
    (_triton_published, "triton: publishes 8000:8000 on every host interface"),
    (_rules_not_mounted, "prometheus: rule file prometheus/alerts.yml is not mounted at /etc/prometheus/prometheus/alerts.yml"),
]


@pytest.mark.parametrize(
    ("breakage", "expected"), [pytest.param(f, e, id=f.__name__.lstrip("_")) for f, e in BREAKAGES]
)
def test_checker_notices(compose, breakage, expected):
    broken = copy.deepcopy(compose)
    breakage(broken)
    problems = compose_problems(broken)
    assert any(expected in problem for problem in problems), problems


def test_checker_reads_the_triton_base_image_from_the_dockerfile(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "triton.Dockerfile").write_text(
        "ARG BASE=nvcr.io/nvidia/tritonserver:24.08-py3\nFROM ${BASE} AS serve\n"
    )
    problems = _triton_problems(load_compose()["services"]["triton"], tmp_path)
    assert any("is not FROM nvcr.io/nvidia/tritonserver:24.10-py3" in problem for problem in problems), problems


def test_checker_sees_a_prometheus_target_that_is_not_a_service(compose, tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "prometheus.yml").write_text(
        yaml.safe_dump({"scrape_configs": [{"job_name": "x", "static_configs": [{"targets": ["worker:6066"]}]}]})
    )
    assert _prometheus_problems(compose["services"], tmp_path) == [
        "prometheus: scrape target worker:6066 is not a service"
    ]
