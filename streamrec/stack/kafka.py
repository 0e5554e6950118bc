"""Apache Kafka in KRaft mode (broker and controller in one JVM) from Maven Central jars.

The jars of ``org.apache.kafka:kafka_2.13`` and its runtime dependencies are
resolved once with ``mvn dependency:copy-dependencies`` into the cache folder
(shared by every stack on the machine); the storage folder is formatted once
per state folder, so a restart keeps the topics and their data.

With ``kafka_sasl_port`` set the broker also has a ``SASL_PLAINTEXT`` listener for clients that
accepts SCRAM-SHA-512 only, as a production listener would; its user is written into the
cluster metadata when the storage is formatted (``--add-scram``), the way KRaft creates SCRAM
credentials before any broker runs. The PLAINTEXT listener stays: the broker talks to itself
and the stack's health probe on it.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings
from streamrec.stack.base import Say, Service
from streamrec.stack.process import StackError, require_binary
from streamrec.stack.system import SystemPackage

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamrec.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <!-- Kafka logs through SLF4J 1.7; this binds it to the log4j2 core it already ships. -->
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaService(Service):
    name = "kafka"

    def system_packages(self) -> list[SystemPackage]:
        # Maven resolves the broker's jars from Maven Central; Java 17 runs them.
        return [SystemPackage("java", "openjdk-17-jre-headless"), SystemPackage("mvn", "maven")]

    def ports(self) -> dict[str, int]:
        ports = {"kafka_port": self.settings.kafka_port, "kafka_controller_port": self.settings.kafka_controller_port}
        if self.settings.kafka_sasl_port is not None:
            ports["kafka_sasl_port"] = self.settings.kafka_sasl_port
        return ports

    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_port}"

    @property
    def libs_dir(self) -> Path:
        return self.settings.cache_dir.resolve() / f"kafka-{self.settings.kafka_version}" / "libs"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    def ensure_jars(self, say: Say) -> None:
        complete = self.libs_dir.parent / ".complete"
        if complete.exists():
            return
        mvn = require_binary("mvn", "maven")
        say(f"Resolving Apache Kafka {self.settings.kafka_version} jars from Maven Central (one time)…")
        self.libs_dir.parent.mkdir(parents=True, exist_ok=True)
        pom = self.libs_dir.parent / "pom.xml"
        pom.write_text(_POM.format(version=self.settings.kafka_version, log4j_version="2.24.3"))
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={self.libs_dir}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"Maven could not resolve Kafka {self.settings.kafka_version}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
        complete.write_text("ok\n")

    def prepare(self, say: Say) -> None:
        self.ensure_jars(say)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port, controller = self.settings.host, self.settings.kafka_port, self.settings.kafka_controller_port
        self.config_path.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={host}:{controller}",
                    *self._listeners(),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.log_dir}",
                    # Topics are created explicitly (with their compaction settings), never by a typo.
                    "auto.create.topics.enable=false",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=6",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.cleaner.backoff.ms=5000",
                    "",
                ]
            )
        )
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        if not (self.log_dir / "meta.properties").exists():
            say("Formatting Kafka storage (KRaft, single node)…")
            result = subprocess.run(
                # One token: an id may start with "-", which the tool's parser takes for an option.
                [*self._java(), "kafka.tools.StorageTool", "format", "--standalone",
                 f"--cluster-id={_cluster_id()}", "-c", str(self.config_path), *self._scram_users()],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def _listeners(self) -> list[str]:
        """Listener lines of server.properties: PLAINTEXT and CONTROLLER, plus CLIENTS (SASL) when wanted."""
        host, port, controller = self.settings.host, self.settings.kafka_port, self.settings.kafka_controller_port
        sasl = self.settings.kafka_sasl_port
        if sasl is None:
            return [
                f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
                f"advertised.listeners=PLAINTEXT://{host}:{port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        return [
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller},CLIENTS://{host}:{sasl}",
            f"advertised.listeners=PLAINTEXT://{host}:{port},CLIENTS://{host}:{sasl}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,CLIENTS:SASL_PLAINTEXT",
            "listener.name.clients.sasl.enabled.mechanisms=SCRAM-SHA-512",
            # The broker's side of SCRAM needs a login module; the users live in the cluster metadata.
            "listener.name.clients.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]

    def _scram_users(self) -> list[str]:
        """``--add-scram`` for the format step: the SASL listener's user, stored in the metadata log."""
        if self.settings.kafka_sasl_port is None:
            return []
        assert self.settings.kafka_sasl_password is not None  # the settings' validator
        name, password = self.settings.kafka_sasl_username, self.settings.kafka_sasl_password.get_secret_value()
        return ["--add-scram", f'SCRAM-SHA-512=[name={name},password="{password}"]']

    def _java(self, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs_dir}/*",
        ]

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [
            *self._java(self.settings.kafka_heap),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            "kafka.Kafka",
            str(self.config_path),
        ]
        return argv, {}

    def probe(self, timeout_s: float) -> str | None:
        problem = self._probe(KafkaSettings(bootstrap_servers=self.address()), timeout_s)
        if problem is None and self.settings.kafka_sasl_port is not None:
            # Healthy means the SASL listener admits its user too (a state folder formatted without it would not).
            assert self.settings.kafka_sasl_password is not None
            sasl = KafkaSettings(
                bootstrap_servers=f"{self.settings.host}:{self.settings.kafka_sasl_port}", security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-512", sasl_username=self.settings.kafka_sasl_username,
                sasl_password=self.settings.kafka_sasl_password,
            )
            problem = self._probe(sasl, timeout_s)
            return None if problem is None else f"SASL listener: {problem}"
        return problem

    @staticmethod
    def _probe(kafka: KafkaSettings, timeout_s: float) -> str | None:
        admin = AdminClient(
            {**client_config(kafka, client="stack-probe"), "socket.timeout.ms": int(timeout_s * 1000), "logger": _QUIET}
        )
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except Exception as error:  # confluent raises KafkaException with varied codes
            return str(error)
        return None if metadata.brokers else "no broker registered yet"


# Connection-refused noise while the broker starts is expected; the probe reports the outcome.
_QUIET = logging.getLogger("streamrec.stack.kafka.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what StorageTool makes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
