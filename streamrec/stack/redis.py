"""Redis from Debian's ``redis-server`` with AOF persistence under the state folder.

With ``redis_acl_username`` set, Redis admits that ACL user only (the ``default`` user is off),
so clients must log in as a production Redis with ACLs would have them; the stack's own health
probe logs in as that user too.
"""

from __future__ import annotations

import shutil

import redis

from streamrec.settings import RedisSettings
from streamrec.stack.base import Say, Service
from streamrec.stack.system import SystemPackage
from streamrec.store.connection import connect_blocking


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

    def _acl_lines(self) -> list[str]:
        user, password = self.settings.redis_acl_username, self.settings.redis_acl_password
        if user is None or password is None:
            return []
        # Every key, channel and command, as streamrec's processes need (FUNCTION LOAD included).
        return [f"user {user} on >{password.get_secret_value()} ~* &* +@all", "user default off"]

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
                    *self._acl_lines(),
                    "",
                ]
            )
        )
        self.config_path.chmod(0o600)  # it may hold a password

    def command(self) -> tuple[list[str], dict[str, str]]:
        # Status and down build the command too, on machines that may not have Redis yet.
        return [shutil.which("redis-server") or "redis-server", str(self.config_path)], {}

    def probe(self, timeout_s: float) -> str | None:
        login = RedisSettings(url=self.address(), username=self.settings.redis_acl_username,
                              password=self.settings.redis_acl_password)
        client = connect_blocking(login, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            client.ping()
            loading = client.info("persistence").get("loading", 0)
            return "loading the AOF" if loading else None
        except redis.RedisError as error:
            return str(error)
        finally:
            client.close()
