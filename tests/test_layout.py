"""Dependencies point one way: components import the core, never each other."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from streamrec.settings import REPO_ROOT

COMPONENTS = ("streams", "serving", "trainer")


def imported_packages(folder: Path) -> dict[str, set[str]]:
    return imported_packages_at(folder, relative_to=REPO_ROOT)


def imported_packages_at(folder: Path, relative_to: Path | None = None) -> dict[str, set[str]]:
    """Top-level package -> files under ``folder`` that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(relative_to or folder)))
    return found


def test_core_imports_no_component():
    imports = imported_packages(REPO_ROOT / "streamrec")
    offenders = {name: files for name, files in imports.items() if name in COMPONENTS}
    assert not offenders, f"streamrec/ must not import components: {offenders}"


def test_components_do_not_import_each_other():
    for component in COMPONENTS:
        imports = imported_packages(REPO_ROOT / component)
        others = {name: files for name, files in imports.items() if name in COMPONENTS and name != component}
        assert not others, f"{component}/ imports {others}; share code through streamrec/ instead"


def test_model_repo_code_imports_only_the_core(tmp_path):
    """Version folders are built artifacts (git ignores them): check the ``model.py`` that every
    version gets, as the artifact writer makes it, and the backend it imports."""
    from typing import get_args

    from streamrec.model.artifacts import Kind, model_py

    for kind in get_args(Kind):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "model.py").write_text(model_py(kind))
        imports = imported_packages_at(folder)
        assert set(imports) == {"streamrec"}, f"model.py of a {kind} version imports {set(imports)}"
    backend = imported_packages_at(REPO_ROOT / "streamrec" / "model")
    assert not set(backend) & set(COMPONENTS)


def test_every_component_folder_has_tracked_code():
    """The checks above walk real files: a fresh checkout must have them."""
    tracked = subprocess.run(["git", "ls-files", *COMPONENTS, "streamrec"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for folder in (*COMPONENTS, "streamrec"):
        assert any(path.startswith(f"{folder}/") and path.endswith(".py") for path in tracked), folder


def test_checker_sees_a_cross_import(tmp_path):
    (tmp_path / "bad.py").write_text("from serving.collector.app import create_app\n")
    global REPO_ROOT
    saved, REPO_ROOT = REPO_ROOT, tmp_path
    try:
        assert "serving" in imported_packages(tmp_path)
    finally:
        REPO_ROOT = saved


# Where a Kafka or Redis client may be configured from an address: the factories only.
CLIENT_FACTORIES = {"streamrec/kafka_client.py", "streamrec/faust_app.py", "streamrec/store/connection.py"}
CLIENT_FOLDERS = ("streamrec", *COMPONENTS, "benchmarks", "tests")


def bare_clients(root: Path) -> dict[str, list[str]]:
    """Files that build a Kafka or Redis client from an address instead of through the factories."""
    checks = {
        "a librdkafka config with its own bootstrap.servers": lambda text: re.search(r"[\"']bootstrap\.servers[\"']\s*:", text),
        "Redis.from_url": lambda text: re.search(r"\bRedis\.from_url\(", text),
        "an aiokafka client without aiokafka_auth": lambda text: re.search(r"\bAIOKafka\w+\(", text) and "aiokafka_auth(" not in text,
        "a Faust app not made by worker_app": lambda text: re.search(r"\bfaust\.App\(", text),
    }
    found: dict[str, list[str]] = {}
    for folder in CLIENT_FOLDERS:
        for path in (root / folder).rglob("*.py"):
            name = str(path.relative_to(root))
            if name in CLIENT_FACTORIES or path == Path(__file__).resolve():
                continue
            text = path.read_text()
            for what, check in checks.items():
                if check(text):
                    found.setdefault(name, []).append(what)
    return found


def test_every_client_is_built_from_the_settings():
    """A client given only an address would skip the listener's security (SASL user, TLS), so it
    would fail against a secured cluster while every other one works: all go through the factories."""
    offenders = bare_clients(REPO_ROOT)
    assert not offenders, (
        f"build Kafka clients with streamrec.kafka_client.client_config and Redis clients with "
        f"streamrec.store.connection.connect: {offenders}"
    )


def test_bare_client_checker_sees_one(tmp_path):
    (tmp_path / "streamrec").mkdir()
    (tmp_path / "streamrec" / "bad.py").write_text(
        'from confluent_kafka import Producer\nProducer({"bootstrap.servers": "kafka:9092"})\n'
        "import redis\nredis.Redis.from_url('redis://x')\n"
    )
    assert bare_clients(tmp_path) == {
        "streamrec/bad.py": ["a librdkafka config with its own bootstrap.servers", "Redis.from_url"]
    }
