"""Redis from Debian's ``redis-server`` with AOF persistence under the state folder."""

from __future__ import annotations

import shutil

import redis

from streamrec.stack.base import Say, Service
from streamrec.stack.system import SystemPackage


class RedisService(Service):
    name = "redis"

    def system_packages(self) -> list[SystemPackage]:
        return [SystemPackage("redis-server", "redis-server")]

    def ports(self) -> dict[str, int]:
        return {"redis_port": self.settings.redis_port}

    def address(self) -> str:
        return f"redis://{self.settings.host}:{self.settings.redis_port}/0"

    @property
    def config_path(self):
        return self.data_dir / "redis.conf"

    def prepare(self, say: Say) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    f"bind {self.settings.host}",
                    f"port {self.settings.redis_port}",
                    f"dir {self.data_dir}",
                    "daemonize no",
                    # Keep the config path in the process title: it identifies our process.
                    "set-proc-title no",
                    'logfile ""',
                    "appendonly yes",
                    "appendfsync everysec",
                    "save 900 1 300 100 60 10000",
                    "",
                ]
            )
        )

    def command(self) -> tuple[list[str], dict[str, str]]:
        # Status and down build the command too, on machines that may not have Redis yet.
        return [shutil.which("redis-server") or "redis-server", str(self.config_path)], {}

    def probe(self, timeout_s: float) -> str | None:
        client = redis.Redis.from_url(self.address(), socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            client.ping()
            loading = client.info("persistence").get("loading", 0)
            return "loading the AOF" if loading else None
        except redis.RedisError as error:
            return str(error)
        finally:
            client.close()
