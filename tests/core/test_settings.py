"""Settings are read by their owner, and settings of different owners that must agree are checked
when a process starts, with a message that names both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.settings import REPO_ROOT, Settings


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"STREAMREC_{name}", value)


def test_defaults_agree():
    settings = Settings()
    assert settings.recs.scorer_model == settings.trainer.model
    assert settings.api.max_k <= settings.recs.k


def test_trainer_model_repo_defaults_to_the_local_stacks_and_is_its_own_setting(monkeypatch, tmp_path):
    _env(monkeypatch, STACK__MODEL_REPO=str(tmp_path / "local"))
    assert Settings().model_repo == tmp_path / "local"
    _env(monkeypatch, TRAINER__MODEL_REPO=str(tmp_path / "shared"))
    settings = Settings()
    assert settings.model_repo == tmp_path / "shared" and settings.stack.model_repo == tmp_path / "local"


def test_each_worker_has_its_own_session_timeout(monkeypatch):
    _env(monkeypatch, RECS__SESSION_TIMEOUT_S="30", STREAMS__SESSION_TIMEOUT_S="6")
    settings = Settings()
    assert (settings.recs.session_timeout_s, settings.streams.session_timeout_s) == (30, 6)


def test_dead_letter_cap_is_one_shared_setting(monkeypatch):
    _env(monkeypatch, DEADLETTERS__RAW_MAX_BYTES="4096")
    assert Settings().deadletters.raw_max_bytes == 4096
    _env(monkeypatch, COLLECTOR__DLQ_RAW_MAX_BYTES="4096")
    with pytest.raises(ValidationError, match="dlq_raw_max_bytes"):
        Settings()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"RECS__SCORER_MODEL": "cross_encoder"}, r"recs.scorer_model \(cross_encoder\) and trainer.model \(bert_scorer\) differ"),
        ({"API__MAX_K": "50"}, r"api.max_k \(50\) > recs.k \(20\)"),
        ({"API__DEFAULT_K": "15", "API__MAX_K": "10"}, r"api.default_k \(15\) > api.max_k \(10\)"),
    ],
)
def test_disagreeing_sections_fail_with_both_names(monkeypatch, values, message):
    _env(monkeypatch, **values)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_cli_reports_invalid_settings_without_a_traceback(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STREAMREC_API__MAX_K": "500"}
    result = subprocess.run([sys.executable, "-m", "streamrec", "config"], env=env, capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2
    assert "the settings are invalid" in result.stdout and "api.max_k (500) > recs.k (20)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_auth_refuses_a_guessable_bootstrap_key_and_proxies_that_are_not_networks(monkeypatch):
    _env(monkeypatch, AUTH__BOOTSTRAP_ADMIN_KEY="admin")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings()
    key = "k" * 40
    _env(monkeypatch, AUTH__BOOTSTRAP_ADMIN_KEY=key, AUTH__TRUSTED_PROXIES='["10.0.0.0/8", "proxy.internal"]')
    with pytest.raises(ValidationError, match="'proxy.internal' is not an address or CIDR network"):
        Settings()
    _env(monkeypatch, AUTH__TRUSTED_PROXIES='["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]')
    settings = Settings()
    assert settings.auth.trusted_proxies == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
    assert key not in repr(settings) and settings.auth.bootstrap_admin_key.get_secret_value() == key


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "KAFKA__SASL_USERNAME": "svc"},
         "SASL_SSL needs STREAMREC_KAFKA__SASL_USERNAME and STREAMREC_KAFKA__SASL_PASSWORD"),
        ({"KAFKA__SASL_USERNAME": "svc", "KAFKA__SASL_PASSWORD": "pw"}, "a SASL user is set but STREAMREC_KAFKA__SECURITY_PROTOCOL is PLAINTEXT"),
        ({"KAFKA__SSL_CA_FILE": "/etc/ca.pem"}, "STREAMREC_KAFKA__SSL_CA_FILE set but STREAMREC_KAFKA__SECURITY_PROTOCOL is PLAINTEXT"),
        ({"KAFKA__SECURITY_PROTOCOL": "SSL", "KAFKA__SSL_CERT_FILE": "/etc/c.pem"}, "a client certificate needs its key"),
        ({"KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA__SASL_MECHANISM": "GSSAPI"}, "sasl_mechanism"),
        ({"REDIS__USERNAME": "svc"}, "STREAMREC_REDIS__USERNAME needs STREAMREC_REDIS__PASSWORD"),
        ({"REDIS__CA_FILE": "/etc/ca.pem"}, "set without TLS: set STREAMREC_REDIS__TLS=true or use a rediss:// URL"),
        ({"REDIS__TLS": "true", "REDIS__KEY_FILE": "/etc/k.pem"}, "a client certificate needs its key"),
        ({"STACK__KAFKA_SASL_PORT": "9094"}, "STREAMREC_STACK__KAFKA_SASL_PORT needs STREAMREC_STACK__KAFKA_SASL_PASSWORD"),
    ],
)
def test_half_configured_transport_security_is_refused_naming_the_settings(monkeypatch, values, message):
    _env(monkeypatch, **values)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_transport_security_settings_read_from_the_environment(monkeypatch):
    _env(monkeypatch, KAFKA__SECURITY_PROTOCOL="SASL_SSL", KAFKA__SASL_MECHANISM="SCRAM-SHA-256", KAFKA__SASL_USERNAME="svc",
         KAFKA__SASL_PASSWORD="pw", KAFKA__SSL_CA_FILE="/etc/ca.pem", REDIS__URL="rediss://cache:6380/0",
         REDIS__USERNAME="app", REDIS__PASSWORD="rpw", REDIS__CA_FILE="/etc/ca.pem")
    settings = Settings()
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == "pw"
    assert "pw" not in repr(settings.kafka) and "rpw" not in repr(settings.redis)  # secrets stay out of logs
    assert settings.redis.uses_tls and settings.redis.ca_file == Path("/etc/ca.pem")


def test_a_sasl_client_defaults_to_the_local_stacks_sasl_listener(monkeypatch):
    _env(monkeypatch, STACK__KAFKA_PORT="19092", STACK__KAFKA_SASL_PORT="19094", STACK__KAFKA_SASL_PASSWORD="local")
    assert Settings().bootstrap_servers == "127.0.0.1:19092"  # PLAINTEXT clients keep the PLAINTEXT listener
    _env(monkeypatch, KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA__SASL_USERNAME="streamrec", KAFKA__SASL_PASSWORD="local")
    assert Settings().bootstrap_servers == "127.0.0.1:19094"
