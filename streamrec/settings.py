"""Typed settings for every streamrec process, read once in the entry point.

Every field can be set from the environment with the ``STREAMREC_`` prefix and
``__`` between nested names, e.g. ``STREAMREC_KAFKA__BOOTSTRAP_SERVERS`` or
``STREAMREC_STACK__KAFKA_PORT``. Components receive the parsed objects; nothing
reads the environment anywhere else, so a test can build a ``Settings`` by hand
and be sure no stray variable leaks in.

Client addresses (Kafka bootstrap servers, Redis URL, Triton URLs) default to
the embedded local stack's ports: change ``STREAMREC_STACK__KAFKA_PORT`` once and
every client follows; set the client address explicitly to point at a remote
cluster instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StackSettings(_Section):
    """The embedded local stack started by ``streamrec up`` (and by the test session)."""

    state_dir: Path = Field(
        default=REPO_ROOT / ".streamrec",
        description="Data, PID files and logs of the local services.",
    )
    cache_dir: Path = Field(
        default=REPO_ROOT / ".cache",
        description="Downloaded Kafka jars, shared by every stack on the machine.",
    )
    host: str = Field(default="127.0.0.1", description="Address the local services bind to.")
    kafka_version: str = Field(default="4.1.1", description="Apache Kafka version resolved from Maven Central.")
    kafka_port: int = Field(default=9092, ge=1, le=65535, description="Local broker port.")
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535, description="Local KRaft controller port.")
    kafka_heap: str = Field(default="768m", description="JVM heap of the local broker (-Xmx).")
    redis_port: int = Field(default=6379, ge=1, le=65535, description="Local Redis port.")
    triton_http_port: int = Field(default=8000, ge=1, le=65535, description="Local Triton HTTP port.")
    triton_grpc_port: int = Field(default=8001, ge=1, le=65535, description="Local Triton gRPC port.")
    triton_metrics_port: int = Field(default=8002, ge=1, le=65535, description="Local Triton Prometheus metrics port.")
    model_repo: Path = Field(default=REPO_ROOT / "model_repo", description="Triton model repository.")
    triton_load_models: list[str] = Field(
        default_factory=list,
        description="Models Triton loads at start (explicit model control); empty loads none.",
    )
    services: list[Literal["kafka", "redis", "triton"]] = Field(
        default_factory=lambda: ["kafka", "redis", "triton"],
        description="Services that `streamrec up` starts.",
    )
    kafka_sasl_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="When set, the local broker also listens here with SASL_PLAINTEXT (SCRAM-SHA-512) for kafka_sasl_username.",
    )
    kafka_sasl_username: str = Field(
        default="streamrec", description="SCRAM-SHA-512 user the local broker knows (created when its storage is formatted)."
    )
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Password of that user; required with kafka_sasl_port.")
    redis_acl_username: str | None = Field(
        default=None, description="When set, the local Redis admits only this ACL user (its `default` user is off)."
    )
    redis_acl_password: SecretStr | None = Field(default=None, description="Password of that ACL user; required with redis_acl_username.")
    start_timeout_s: float = Field(default=90.0, gt=0, description="Health-check deadline per service.")
    stop_timeout_s: float = Field(default=20.0, gt=0, description="SIGTERM grace period before SIGKILL.")

    @model_validator(mode="after")
    def _local_users_have_passwords(self) -> "StackSettings":
        if self.kafka_sasl_port is not None and self.kafka_sasl_password is None:
            raise ValueError("STREAMREC_STACK__KAFKA_SASL_PORT needs STREAMREC_STACK__KAFKA_SASL_PASSWORD")
        if self.redis_acl_username is not None and self.redis_acl_password is None:
            raise ValueError("STREAMREC_STACK__REDIS_ACL_USERNAME needs STREAMREC_STACK__REDIS_ACL_PASSWORD")
        return self


class KafkaSettings(_Section):
    """How every Kafka client of the project connects: brokers, and the listener's security.

    ``streamrec.kafka_client`` turns these into librdkafka's settings and Faust's credentials, so a
    producer, a consumer, an admin client and a Faust worker all reach the same listener the same way.
    """

    bootstrap_servers: str | None = Field(
        default=None, description="Broker list; unset means the local stack's broker."
    )
    partitions: int = Field(default=6, ge=1, description="Partitions of each topic created by `streamrec topics create`.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of created topics (3 in production).")
    client_id: str = Field(default="streamrec", description="Prefix of Kafka client ids, visible in broker logs and metrics.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="What the brokers' listener speaks: SASL_* log in with a user, *SSL encrypt (TLS)."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism of the SASL_* protocols (the listener's sasl.enabled.mechanisms)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user; required with SASL_PLAINTEXT and SASL_SSL.")
    sasl_password: SecretStr | None = Field(default=None, description="Password of the SASL user.")
    ssl_ca_file: Path | None = Field(
        default=None, description="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); unset uses the default CA store."
    )
    ssl_cert_file: Path | None = Field(default=None, description="PEM client certificate, for brokers that require mutual TLS.")
    ssl_key_file: Path | None = Field(default=None, description="PEM private key of the client certificate.")
    ssl_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted private key.")
    preflight_timeout_s: float = Field(
        default=30.0, gt=0,
        description="How long a process waits at start for the brokers to answer before it exits naming the setting to fix "
        "(refused credentials end it at once).",
    )

    @model_validator(mode="after")
    def _security_settings_complete(self) -> "KafkaSettings":
        """A half-configured listener would only show up as a client retrying forever: refuse it here."""
        problems = []
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl and (self.sasl_username is None or self.sasl_password is None):
            problems.append(f"{self.security_protocol} needs STREAMREC_KAFKA__SASL_USERNAME and STREAMREC_KAFKA__SASL_PASSWORD")
        if not sasl and (self.sasl_username is not None or self.sasl_password is not None):
            problems.append(
                f"a SASL user is set but STREAMREC_KAFKA__SECURITY_PROTOCOL is {self.security_protocol}: "
                "use SASL_PLAINTEXT or SASL_SSL, or unset the user"
            )
        tls_files = {"SSL_CA_FILE": self.ssl_ca_file, "SSL_CERT_FILE": self.ssl_cert_file,
                     "SSL_KEY_FILE": self.ssl_key_file, "SSL_KEY_PASSWORD": self.ssl_key_password}
        if not tls and any(value is not None for value in tls_files.values()):
            named = ", ".join(f"STREAMREC_KAFKA__{name}" for name, value in tls_files.items() if value is not None)
            problems.append(f"{named} set but STREAMREC_KAFKA__SECURITY_PROTOCOL is {self.security_protocol}: use SSL or SASL_SSL")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            problems.append("a client certificate needs its key: set both STREAMREC_KAFKA__SSL_CERT_FILE and STREAMREC_KAFKA__SSL_KEY_FILE")
        if self.ssl_key_password is not None and self.ssl_key_file is None:
            problems.append("STREAMREC_KAFKA__SSL_KEY_PASSWORD is set without STREAMREC_KAFKA__SSL_KEY_FILE")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RedisSettings(_Section):
    """How every Redis client connects (``streamrec.store.connection``): the URL, and what overrides it."""

    url: str | None = Field(default=None, description="redis:// or rediss:// URL; unset means the local stack's Redis.")
    username: str | None = Field(default=None, description="ACL user (overrides one in the URL); unset: the URL's user, else `default`.")
    password: SecretStr | None = Field(default=None, description="Password of the ACL user or requirepass (overrides one in the URL).")
    tls: bool = Field(default=False, description="Connect with TLS even if the URL says redis:// (a rediss:// URL always does).")
    ca_file: Path | None = Field(default=None, description="PEM file of the CA that signed Redis's certificate; unset uses the default CA store.")
    cert_file: Path | None = Field(default=None, description="PEM client certificate, for a Redis that requires mutual TLS (tls-auth-clients).")
    key_file: Path | None = Field(default=None, description="PEM private key of the client certificate.")
    preflight_timeout_s: float = Field(
        default=10.0, gt=0,
        description="How long a process waits at start for Redis to answer before it exits naming the setting to fix.",
    )
    # A process runs many Redis calls at once (the recs worker recommends a whole batch of users
    # concurrently). redis-py's default pool raises MaxConnectionsError past its size; this pool
    # makes the extra calls wait for a free connection instead, up to pool_timeout_s.
    max_connections: int = Field(default=64, ge=1, description="Connections per process's Redis pool; calls beyond it wait for one.")
    pool_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a call waits for a free pooled connection before it fails.",
    )

    @property
    def uses_tls(self) -> bool:
        return self.tls or (self.url or "").startswith("rediss://")

    @model_validator(mode="after")
    def _security_settings_complete(self) -> "RedisSettings":
        problems = []
        if self.username is not None and self.password is None:
            problems.append("STREAMREC_REDIS__USERNAME needs STREAMREC_REDIS__PASSWORD (Redis's AUTH takes both)")
        files = {"CA_FILE": self.ca_file, "CERT_FILE": self.cert_file, "KEY_FILE": self.key_file}
        if not self.uses_tls and any(value is not None for value in files.values()):
            named = ", ".join(f"STREAMREC_REDIS__{name}" for name, value in files.items() if value is not None)
            problems.append(f"{named} set without TLS: set STREAMREC_REDIS__TLS=true or use a rediss:// URL")
        if (self.cert_file is None) != (self.key_file is None):
            problems.append("a client certificate needs its key: set both STREAMREC_REDIS__CERT_FILE and STREAMREC_REDIS__KEY_FILE")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TritonSettings(_Section):
    http_url: str | None = Field(default=None, description="host:port of Triton's HTTP API; unset means the local stack.")
    grpc_url: str | None = Field(default=None, description="host:port of Triton's gRPC API; unset means the local stack.")


class EventRules(_Section):
    """Checks every entry point (SDK, collector, streams) applies to incoming events."""

    max_future_skew_s: float = Field(
        default=300.0, ge=0, description="An event stamped further ahead of the receiver's clock is rejected."
    )


class DeadLetterSettings(_Section):
    """Dead letters, as every component that refuses input writes them to ``events.dlq``."""

    raw_max_bytes: int = Field(
        default=262_144, ge=1024, description="Raw payload kept on a DLQ record; longer payloads are truncated and flagged."
    )


class AuthSettings(_Section):
    """API keys and rate limits of the HTTP services (collector, API, operations service).

    Off by default so the local demo and the test suite run open; a service that binds a
    non-loopback address with keys off says so in its log at start. Rate limits work either way:
    a limit of 0 is unlimited, and per-address limits start at 0 because every local client (and
    the benchmarks' thousands of events a second) comes from 127.0.0.1.
    """

    enabled: bool = Field(
        default=False, description="Require API keys (`streamrec keys create`) on the collector, the API and the ops service."
    )
    cache_s: float = Field(
        default=5.0, ge=0, description="How long a service trusts a key it looked up: a revoked key stops working within this."
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="A key of your choosing (32+ characters) accepted with every scope: for provisioning keys and for compose."
    )
    redis_timeout_s: float = Field(
        default=0.5, gt=0, description="Longest wait for Redis per key look-up or rate-limit check (keys then fail closed, limits open)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='Proxies (CIDR list, e.g. ["10.0.0.0/8"]) whose X-Forwarded-For names the client; others are the client themselves.',
    )
    collector_key_rate: float = Field(default=1000.0, ge=0, description="Collector requests per second per key (0: unlimited).")
    collector_key_burst: int = Field(default=2000, ge=1, description="Collector requests a key may send at once above its rate.")
    collector_address_rate: float = Field(default=0.0, ge=0, description="Collector requests per second per client address (0: unlimited).")
    collector_address_burst: int = Field(default=100, ge=1, description="Collector requests a client address may send at once above its rate.")
    api_key_rate: float = Field(default=500.0, ge=0, description="API requests per second per key (0: unlimited).")
    api_key_burst: int = Field(default=1000, ge=1, description="API requests a key may send at once above its rate.")
    api_address_rate: float = Field(default=0.0, ge=0, description="API requests per second per client address (0: unlimited).")
    api_address_burst: int = Field(default=100, ge=1, description="API requests a client address may send at once above its rate.")

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        """It opens every door: a short one could be guessed."""
        if key is not None and len(key.get_secret_value()) < 32:
            raise ValueError("bootstrap_admin_key must be at least 32 characters (e.g. `openssl rand -base64 32`)")
        return key

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {network!r} is not an address or CIDR network") from None
        return networks


class CollectorSettings(_Section):
    """The HTTP collector that web and mobile frontends post events to."""

    host: str = Field(default="127.0.0.1", description="Collector bind address (0.0.0.0 in containers).")
    port: int = Field(default=8080, ge=1, le=65535, description="Collector HTTP port.")
    max_batch_events: int = Field(default=500, ge=1, description="Most events in one POST; more is refused with 413.")
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="Largest request body; larger is refused with 413.")
    delivery_timeout_s: float = Field(default=10.0, gt=0, description="How long a request waits for Kafka acks.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Web origins allowed to POST events from a browser (CORS), e.g. ["https://shop.example"]; empty allows none.',
    )
    cors_max_age_s: int = Field(default=600, ge=0, description="How long a browser may cache the answer to a CORS preflight.")


class StreamsSettings(_Section):
    """The Faust worker that turns events into profiles and item statistics in Redis."""

    app_id: str = Field(default="streamrec-streams", description="Faust app id, also the Kafka consumer group.")
    web_host: str = Field(default="127.0.0.1", description="Worker web server bind address (metrics, health).")
    web_port: int = Field(default=6066, ge=1, le=65535, description="Worker web server port; /metrics is there.")
    agents: list[Literal["interactions", "catalog"]] = Field(
        default_factory=lambda: ["interactions", "catalog"],
        description="Agents this worker runs (catalog embedding can scale apart from interactions).",
    )
    batch_max: int = Field(default=1000, ge=1, description="Most events applied to Redis in one batch.")
    batch_within_s: float = Field(default=0.02, gt=0, description="Longest wait to fill a batch.")
    weight_click: float = Field(default=1.0, gt=0, description="Weight of a click in profiles and statistics.")
    weight_cart: float = Field(default=3.0, gt=0, description="Weight of an add-to-cart.")
    weight_purchase: float = Field(default=5.0, gt=0, description="Weight of a purchase.")
    half_life_s: float = Field(default=7 * 86400, gt=0, description="Half-life of category affinities and the profile vector.")
    recent_max: int = Field(default=50, ge=1, description="Interactions kept per user.")
    categories_max: int = Field(default=32, ge=1, description="Category affinities kept per user (strongest).")
    purchased_max: int = Field(default=100, ge=1, description="Purchased items kept per user (for exclusion).")
    profile_ttl_s: int = Field(default=90 * 86400, ge=1, description="A profile untouched this long expires.")
    dedup_window_s: float = Field(default=3600, gt=0, description="A repeated event_id within this window is dropped.")
    dedup_max_ids: int = Field(default=64, ge=1, description="Event ids remembered per user for deduplication.")
    bot_max_clicks: int = Field(default=30, ge=2, description="More clicks than this by one user within bot_window_s is bot-like.")
    bot_window_s: float = Field(default=10.0, gt=0, description="Window of the bot-like click-rate rule.")
    price_tolerance: float = Field(default=0.5, gt=0, description="Purchase price off the catalog price by more than this fraction is an outlier.")
    max_future_s: float = Field(default=300.0, ge=0, description="Event ts further ahead of its Kafka timestamp is quarantined.")
    max_late_s: float = Field(default=7 * 86400, gt=0, description="Event ts further behind its Kafka timestamp is quarantined.")
    popularity_short_s: float = Field(default=3600, gt=0, description="Time constant of short-term item popularity (1 h).")
    popularity_long_s: float = Field(default=86400, gt=0, description="Time constant of long-term item popularity (24 h).")
    covisit_window_s: float = Field(default=1800, gt=0, description="Two interactions of one user this close are co-visits.")
    covisit_top_n: int = Field(default=50, ge=1, description="Co-visitation neighbours kept per item.")
    covisit_history: int = Field(default=10, ge=1, description="Recent items per interaction type a new one is paired with.")
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="A streams worker silent this long loses its partitions to the others."
    )
    watermark_check_s: float = Field(
        default=5.0, gt=0,
        description="How often each assigned partition's Redis watermark is compared with what was applied (finds lost Redis writes).",
    )


class AttributionSettings(_Section):
    """The attribution worker: impressions and accepted events into per-variant counts in Redis."""

    app_id: str = Field(default="streamrec-attribution", description="Faust app id of the attribution worker, also its consumer group.")
    web_host: str = Field(default="127.0.0.1", description="Attribution worker web server bind address (metrics).")
    web_port: int = Field(default=6069, ge=1, le=65535, description="Attribution worker web server port; /metrics is there.")
    batch_max: int = Field(default=1000, ge=1, description="Most records attributed in one Redis transaction.")
    batch_within_s: float = Field(default=0.05, gt=0, description="Longest wait to fill a batch.")
    view_through_window_s: float = Field(
        default=86400, gt=0, description="A purchase of an item shown this long before (or less) counts for the list that showed it."
    )
    shown_lists_kept: int = Field(default=50, ge=1, description="Lists remembered per user for view-through and click labelling.")
    seen_ids_kept: int = Field(default=256, ge=1, description="Event ids remembered per user (events.accepted may repeat one after a crash).")
    state_ttl_s: int = Field(default=7 * 86400, ge=1, description="A user's attribution state untouched this long expires.")
    session_timeout_s: float = Field(default=10.0, gt=0, description="A worker silent this long loses its partitions to the others.")


class RecsSettings(_Section):
    """The recommender: candidates, BERT ranking, diversity and the real-time loop."""

    app_id: str = Field(default="streamrec-recs", description="Faust app id of the recs worker, also its consumer group.")
    web_host: str = Field(default="127.0.0.1", description="Recs worker web server bind address (metrics).")
    web_port: int = Field(default=6067, ge=1, le=65535, description="Recs worker web server port; /metrics is there.")
    scorer_model: str = Field(
        default="bert_scorer",
        description="Triton model that retrieves and scores candidates (the sequence BERT, bert_scorer).",
    )
    k: int = Field(default=20, ge=1, le=200, description="Items in a published (and cached) recommendation list.")
    candidates: int = Field(default=200, ge=10, description="Candidates gathered per user before ranking.")
    covisit_sources: int = Field(default=10, ge=1, description="Newest distinct history items whose co-visit neighbours are candidates.")
    covisit_per_item: int = Field(default=20, ge=1, description="Co-visitation neighbours read per history item.")
    vector_candidates: int = Field(default=100, ge=0, description="Nearest items to the profile vector taken as candidates.")
    trending_pool: int = Field(default=500, ge=10, description="Most popular items (last hour) that category and global trending draw from.")
    categories_top: int = Field(default=3, ge=0, description="The user's strongest categories whose trending items are candidates.")
    per_category: int = Field(default=15, ge=1, description="Trending items taken per strong category.")
    trending_candidates: int = Field(default=30, ge=0, description="Global trending items added (all of the list for a new user).")
    exclude_recent: int = Field(default=5, ge=0, description="The user's newest interacted items left out of the list (purchases always are).")
    scorer_enabled: bool = Field(default=True, description="Rank with the sequence model (false: the signals alone, every list marked signals).")
    sequence_candidates: int = Field(
        default=100, ge=0, description="Items the sequence model retrieves from the whole catalog as candidates, besides scoring the others."
    )
    diversity_pool: int = Field(default=60, ge=1, description="Best-blended candidates the diversity re-rank picks the list from.")
    scorer_budget_ms: float = Field(
        default=800.0, gt=0, description="Longest wait for the scorer; over it the list is served from the signals, marked degraded."
    )
    mmr_lambda: float = Field(default=0.75, ge=0, le=1, description="Relevance weight of the diversity re-rank (1: no diversity).")
    blender_weights: Path | None = Field(
        default=None, description="JSON weights of the signal blender (written by `streamrec trainer fit-blender`); unset uses the packaged ones."
    )
    variant: str = Field(default="bert-blend-mmr", description="Label of the lists served outside an experiment (for attribution).")
    experiments_refresh_s: float = Field(default=2.0, gt=0, description="How often the running experiment is read from Redis.")
    cache_ttl_s: int = Field(default=3600, ge=1, description="How long a computed list stays cached in Redis.")
    batch_max_users: int = Field(default=64, ge=1, description="Most profile updates taken per batch (duplicates of a user collapse).")
    debounce_s: float = Field(default=0.05, gt=0, description="Longest wait to collect a batch; a user's updates inside it yield one list.")
    index_refresh_s: float = Field(default=1.0, gt=0, description="How often the item index reads catalog changes from Redis.")
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="A recs worker silent this long loses its partitions to the others."
    )


class ApiSettings(_Section):
    """The HTTP recommendation API."""

    host: str = Field(default="127.0.0.1", description="API bind address (0.0.0.0 in containers).")
    port: int = Field(default=8090, ge=1, le=65535, description="API HTTP port.")
    default_k: int = Field(default=10, ge=1, description="Items returned when the request has no k.")
    max_k: int = Field(default=20, ge=1, description="Largest k a request may ask for; at most recs.k, the length of cached lists.")
    compute_budget_ms: float = Field(
        default=250.0, gt=0, description="Scorer budget of a list computed on request (no usable cached list)."
    )


class TrainerSettings(_Section):
    """The incremental trainer: fine-tunes the served sequence scorer on new events and republishes it to Triton."""

    model: str = Field(
        default="bert_scorer",
        description="Served scorer the trainer fine-tunes and republishes (the sequence BERT, bert_scorer).",
    )
    model_repo: Path | None = Field(
        default=None,
        description="Model repository the trainer publishes into and `streamrec model` manages; unset means the local stack's.",
    )
    group_id: str = Field(default="streamrec-trainer", description="Kafka consumer group of the trainer (offsets also live in each version's metadata).")
    interval_s: float = Field(default=300.0, gt=0, description="Seconds between cycles of `streamrec trainer run` (overridden by --interval).")
    min_events: int = Field(default=200, ge=1, description="A cycle with fewer new events publishes nothing and waits for more.")
    max_events: int = Field(default=200_000, ge=1, description="Most new events one cycle reads (the rest wait for the next).")
    context_events: int = Field(default=5_000, ge=0, description="Older events re-read per partition: history of users the replay buffer does not hold, and repeated events to leave out.")
    holdout_fraction: float = Field(default=0.15, gt=0, lt=1, description="Newest share of the cycle's events (by time) whose users' last events the gate judges on.")
    holdout_max: int = Field(default=2_000, ge=1, description="At most this many held-out (history -> next item) rows, the newest.")
    replay_capacity: int = Field(default=20_000, ge=0, description="User sequences kept between cycles (the most recently active users): their histories and the replayed data.")
    replay_ratio: float = Field(default=0.5, ge=0, description="Replayed sequences of users without new events mixed in per new training sequence.")
    epochs: int = Field(default=2, ge=1, description="Passes over the cycle's training sequences (new and replayed).")
    max_minutes: float = Field(default=5.0, gt=0, description="Training time budget per cycle.")
    batch_size: int = Field(default=128, ge=1, description="Sequences per optimiser step.")
    lr: float = Field(default=3e-4, gt=0, description="Learning rate of the warm-started fine-tuning.")
    gate_se: float = Field(default=1.0, ge=0, description="The challenger's NDCG@10 may trail the champion's by this many standard errors of their paired difference.")
    keep_versions: int = Field(default=5, ge=2, description="Complete versions kept in the model repository (older ones are deleted).")
    load_timeout_s: float = Field(default=300.0, gt=0, description="Longest wait for Triton to load and warm up a new version.")
    threads: int = Field(default=2, ge=1, description="torch CPU threads of the trainer.")
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of `trainer run`'s /metrics (0.0.0.0 in containers).")
    metrics_port: int = Field(default=6068, ge=1, le=65535, description="Port of `trainer run`'s /metrics (cycles by outcome, rejections in a row).")


class OpsSettings(_Section):
    """The operations service: lag judged per group, the end-to-end canary, the scorecard, the live page."""

    host: str = Field(default="127.0.0.1", description="Operations service bind address (0.0.0.0 in containers).")
    port: int = Field(default=8095, ge=1, le=65535, description="Operations service HTTP port: the page at /, /metrics, /api/overview.")
    interval_s: float = Field(default=5.0, gt=0, description="Seconds between lag samples (and scrapes of the other processes).")
    window: int = Field(default=6, ge=2, description="Lag samples a partition is judged over (Burrow's window): window x interval_s seconds.")
    warn_lag_s: float = Field(default=60.0, gt=0, description="A group whose oldest unread record is older than this is WARN.")
    err_lag_s: float = Field(default=300.0, gt=0, description="A group whose oldest unread record is older than this is ERR.")
    periodic_groups: list[str] = Field(
        default_factory=lambda: ["streamrec-trainer"],
        description="Groups that consume in batches with pauses (the trainer): judged by REWIND and the periodic thresholds only.",
    )
    periodic_warn_lag_s: float = Field(default=900.0, gt=0, description="A periodic group whose oldest unread record is older than this is WARN.")
    periodic_err_lag_s: float = Field(default=1800.0, gt=0, description="A periodic group whose oldest unread record is older than this is ERR.")
    max_groups: int = Field(default=200, ge=1, description="Consumer groups exported with their own labels (the rest are counted, not labelled).")
    partition_metrics: bool = Field(default=True, description="Export lag per partition too (groups x partitions series); false keeps per-group series only.")
    canary_interval_s: float = Field(default=30.0, ge=0, description="Seconds between end-to-end canary events; 0 turns the canary off.")
    canary_timeout_s: float = Field(default=30.0, gt=0, description="A canary list not seen on `recommendations` within this is a failure.")
    collector_url: str | None = Field(default=None, description="Base URL of the collector (canary events, /metrics); unset means the local one.")
    api_url: str | None = Field(default=None, description="Base URL of the recommendation API (/metrics); unset means the local one.")
    canary_key: SecretStr | None = Field(
        default=None, description="Key (events:write) the canary posts with when the collector requires keys; unset uses auth.bootstrap_admin_key."
    )
    streams_metrics_url: str | None = Field(default=None, description="Streams worker /metrics URL; unset means the local one.")
    recs_metrics_url: str | None = Field(default=None, description="Recs worker /metrics URL; unset means the local one.")
    trainer_metrics_url: str | None = Field(default=None, description="Trainer /metrics URL; unset means the local one.")
    triton_metrics_url: str | None = Field(default=None, description="Triton's metrics URL; unset means the local stack's.")


CatalogField = Literal["title", "category", "brand", "price", "currency"]
"""Catalog record fields whose absence the streams worker counts (``streamrec_streams_catalog_fields_missing_total``)."""


class DataQualitySettings(_Section):
    """Targets and limits of the data-quality scorecard (`streamrec quality`).

    A check meets its target at or better than ``*_target`` (grade ok), fails beyond ``*_limit``
    (grade fail) and warns in between. Shares are fractions (0.001 is 0.1 %).
    """

    item_in_catalog_target: float = Field(default=0.99, ge=0, le=1, description="Share of applied events whose item the catalog has: ok at or above this.")
    item_in_catalog_limit: float = Field(default=0.9, ge=0, le=1, description="Share of applied events whose item the catalog has: fails below this.")
    catalog_fields: list[CatalogField] = Field(
        default_factory=lambda: ["title", "category", "price"],
        description="Catalog fields checked for presence (the worker counts title, category, brand, price and currency).",
    )
    catalog_field_target: float = Field(default=0.99, ge=0, le=1, description="Share of stored catalog items that have a checked field: ok at or above this.")
    catalog_field_limit: float = Field(default=0.9, ge=0, le=1, description="Share of stored catalog items that have a checked field: fails below this.")
    dead_letter_target: float = Field(default=0.001, ge=0, le=1, description="Share of events dead-lettered (streams: malformed; collector: rejected): ok at or below this.")
    dead_letter_limit: float = Field(default=0.01, ge=0, le=1, description="Share of events dead-lettered: fails above this.")
    duplicate_target: float = Field(default=0.01, ge=0, le=1, description="Share of events set aside as duplicates: ok at or below this.")
    duplicate_limit: float = Field(default=0.05, ge=0, le=1, description="Share of events set aside as duplicates: fails above this.")
    late_or_future_target: float = Field(default=0.001, ge=0, le=1, description="Share of events set aside as late or future-stamped: ok at or below this.")
    late_or_future_limit: float = Field(default=0.01, ge=0, le=1, description="Share of events set aside as late or future-stamped: fails above this.")
    event_delay_p99_target_s: float = Field(default=60.0, gt=0, description="99th percentile of Kafka timestamp minus event ts of applied events: ok at or below this.")
    event_delay_p99_limit_s: float = Field(default=600.0, gt=0, description="99th percentile of the event delay: fails above this.")
    price_outlier_target: float = Field(default=0.001, ge=0, le=1, description="Share of purchases priced off the catalog (price_mismatch): ok at or below this.")
    price_outlier_limit: float = Field(default=0.01, ge=0, le=1, description="Share of purchases priced off the catalog: fails above this.")

    @model_validator(mode="after")
    def _targets_inside_limits(self) -> "DataQualitySettings":
        """A target beyond its limit would make a check fail while meeting its target."""
        higher_is_better = ("item_in_catalog", "catalog_field")
        lower_is_better = ("dead_letter", "duplicate", "late_or_future", "price_outlier")
        problems = [f"{name}_target < {name}_limit" for name in higher_is_better
                    if getattr(self, f"{name}_target") < getattr(self, f"{name}_limit")]
        problems += [f"{name}_target > {name}_limit" for name in lower_is_better
                     if getattr(self, f"{name}_target") > getattr(self, f"{name}_limit")]
        if self.event_delay_p99_target_s > self.event_delay_p99_limit_s:
            problems.append("event_delay_p99_target_s > event_delay_p99_limit_s")
        if problems:
            raise ValueError("data-quality targets must not lie beyond their limits: " + ", ".join(problems))
        return self


class Settings(BaseSettings):
    """Root settings object; build it once per process with ``Settings()``."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    triton: TritonSettings = TritonSettings()
    events: EventRules = EventRules()
    deadletters: DeadLetterSettings = DeadLetterSettings()
    auth: AuthSettings = AuthSettings()
    collector: CollectorSettings = CollectorSettings()
    streams: StreamsSettings = StreamsSettings()
    attribution: AttributionSettings = AttributionSettings()
    trainer: TrainerSettings = TrainerSettings()
    recs: RecsSettings = RecsSettings()
    api: ApiSettings = ApiSettings()
    ops: OpsSettings = OpsSettings()
    data_quality: DataQualitySettings = DataQualitySettings()

    @model_validator(mode="after")
    def _default_clients_to_local_stack(self) -> "Settings":
        """Point unset client addresses at the local stack so one port setting moves both."""
        host = self.stack.host
        if self.kafka.bootstrap_servers is None:
            # A SASL client meets the local broker on its SASL listener, when the stack runs one.
            sasl = self.kafka.security_protocol == "SASL_PLAINTEXT" and self.stack.kafka_sasl_port is not None
            port = self.stack.kafka_sasl_port if sasl else self.stack.kafka_port
            object.__setattr__(self, "kafka", self.kafka.model_copy(update={"bootstrap_servers": f"{host}:{port}"}))
        if self.redis.url is None:
            object.__setattr__(
                self, "redis", self.redis.model_copy(update={"url": f"redis://{host}:{self.stack.redis_port}/0"})
            )
        updates = {}
        if self.triton.http_url is None:
            updates["http_url"] = f"{host}:{self.stack.triton_http_port}"
        if self.triton.grpc_url is None:
            updates["grpc_url"] = f"{host}:{self.stack.triton_grpc_port}"
        if updates:
            object.__setattr__(self, "triton", self.triton.model_copy(update=updates))
        local = {
            "collector_url": f"http://{host}:{self.collector.port}",
            "api_url": f"http://{host}:{self.api.port}",
            "streams_metrics_url": f"http://{host}:{self.streams.web_port}/metrics",
            "recs_metrics_url": f"http://{host}:{self.recs.web_port}/metrics",
            "trainer_metrics_url": f"http://{host}:{self.trainer.metrics_port}/metrics",
            "triton_metrics_url": f"http://{host}:{self.stack.triton_metrics_port}/metrics",
        }
        targets = {name: url for name, url in local.items() if getattr(self.ops, name) is None}
        if targets:
            object.__setattr__(self, "ops", self.ops.model_copy(update=targets))
        return self

    @model_validator(mode="after")
    def _sections_agree(self) -> "Settings":
        """Settings of different owners that only make sense together, checked before anything starts."""
        problems = []
        if self.recs.scorer_model != self.trainer.model:
            problems.append(
                f"recs.scorer_model ({self.recs.scorer_model}) and trainer.model ({self.trainer.model}) differ: the trainer "
                "would republish a model the recommender does not serve; set STREAMREC_RECS__SCORER_MODEL and "
                "STREAMREC_TRAINER__MODEL to the same model"
            )
        if self.api.max_k > self.recs.k:
            problems.append(
                f"api.max_k ({self.api.max_k}) > recs.k ({self.recs.k}): requests for more than recs.k items could never "
                "use the cached lists; lower STREAMREC_API__MAX_K or raise STREAMREC_RECS__K"
            )
        if self.api.default_k > self.api.max_k:
            problems.append(f"api.default_k ({self.api.default_k}) > api.max_k ({self.api.max_k})")
        if problems:
            raise ValueError("settings disagree: " + "; ".join(problems))
        return self

    @property
    def bootstrap_servers(self) -> str:
        assert self.kafka.bootstrap_servers is not None  # filled by the validator
        return self.kafka.bootstrap_servers

    @property
    def redis_url(self) -> str:
        assert self.redis.url is not None
        return self.redis.url

    @property
    def model_repo(self) -> Path:
        """The trainer's model repository; the local stack's when unset (also in sections built by hand)."""
        return self.trainer.model_repo or self.stack.model_repo


@dataclass(frozen=True)
class SettingDoc:
    env: str
    default: str
    description: str


def setting_docs(model: type[BaseModel] = Settings, prefix: str = "STREAMREC_") -> list[SettingDoc]:
    """Every setting with its environment variable, default and description (for docs and checks)."""
    docs: list[SettingDoc] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        env = f"{prefix}{name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            docs.extend(setting_docs(annotation, f"{env}__"))
            continue
        default = field.default_factory() if field.default_factory is not None else field.default
        if isinstance(default, Path):
            default = default.relative_to(REPO_ROOT) if default.is_relative_to(REPO_ROOT) else default
        docs.append(SettingDoc(env, "unset" if default is None else str(default), field.description or ""))
    return docs


def settings_markdown() -> str:
    """The settings table as Markdown (the README embeds it; a test keeps the two equal)."""
    rows = [f"| `{doc.env}` | `{doc.default}` | {doc.description} |" for doc in setting_docs()]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows])


def env_names() -> set[str]:
    """Every environment variable name that maps to a setting (used to check deployment files)."""
    return {doc.env for doc in setting_docs()}
