from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import AlertRegionPolicy, Settings


def test_dev_defaults_work() -> None:
    settings = Settings(env="dev")
    assert settings.embedded_broker
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.sqlalchemy_url.startswith("sqlite:///")
    assert not settings.idempotent_producer  # Tansu's memory storage lacks InitProducerId


def test_prod_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match=r"LOOKOUT_SECRET_KEY.*LOOKOUT_ADMIN_TOKEN"):
        Settings(env="prod")


def test_prod_refuses_the_default_twilio_token_with_the_twilio_backend() -> None:
    with pytest.raises(ValidationError, match="LOOKOUT_TWILIO_AUTH_TOKEN"):
        Settings(env="prod", secret_key="s" * 32, admin_token="a" * 32, sms_backend="twilio")


def test_prod_refuses_skipping_webhook_signatures() -> None:
    with pytest.raises(ValidationError, match="SIGNATURE"):
        Settings(env="prod", secret_key="s" * 32, admin_token="a" * 32,
                 twilio_skip_signature_check=True)


def test_prod_with_real_secrets_and_an_external_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_ENV", "prod")
    monkeypatch.setenv("LOOKOUT_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("LOOKOUT_ADMIN_TOKEN", "t" * 40)
    monkeypatch.setenv("LOOKOUT_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("LOOKOUT_PUBLIC_ALERTS_URL", "https://alerts.example.org")
    monkeypatch.setenv("LOOKOUT_SMS_BACKEND", "twilio")
    monkeypatch.setenv("LOOKOUT_TWILIO_AUTH_TOKEN", "a" * 32)
    settings = Settings()
    assert not settings.embedded_broker
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.idempotent_producer


def test_a_plain_postgresql_uri_is_driven_by_psycopg() -> None:
    uri = "postgresql://lookout:pw@lookout-db-rw:5432/lookout"  # CloudNativePG's `uri`
    assert Settings(env="test", database_url=uri).sqlalchemy_url == (
        "postgresql+psycopg://lookout:pw@lookout-db-rw:5432/lookout")
    assert Settings(env="test", database_url="postgres://u@h/d").sqlalchemy_url == (
        "postgresql+psycopg://u@h/d")
    explicit = "postgresql+psycopg://u@h/d"
    assert Settings(env="test", database_url=explicit).sqlalchemy_url == explicit


@pytest.mark.parametrize(("field", "name"), [("secret_key", "LOOKOUT_SECRET_KEY"),
                                             ("admin_token", "LOOKOUT_ADMIN_TOKEN")])
def test_prod_refuses_secrets_shorter_than_32_bytes(field: str, name: str) -> None:
    good = {"secret_key": "s" * 32, "admin_token": "a" * 32, "sms_backend": "twilio",
            "twilio_auth_token": "t" * 32, "public_alerts_url": "https://alerts.example.org"}
    assert Settings(env="prod", **good)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=f"{name} shorter than 32 bytes"):
        Settings(env="prod", **{**good, field: "a"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=f"{name} shorter than 32 bytes"):
        Settings(env="prod", **{**good, field: "x" * 31})  # type: ignore[arg-type]


def test_prod_refuses_the_outbox_sms_backend() -> None:
    with pytest.raises(ValidationError, match="LOOKOUT_SMS_BACKEND=outbox"):
        Settings(env="prod", secret_key="s" * 32, admin_token="a" * 32,
                 public_alerts_url="https://alerts.example.org")


def test_prod_requires_the_public_alerts_url() -> None:
    with pytest.raises(ValidationError, match="LOOKOUT_PUBLIC_ALERTS_URL"):
        Settings(env="prod", secret_key="s" * 32, admin_token="a" * 32, sms_backend="twilio",
                 twilio_auth_token="t" * 32)
    assert Settings(env="prod", secret_key="s" * 32, admin_token="a" * 32,
                    sms_backend="twilio", twilio_auth_token="t" * 32,
                    public_alerts_url="https://alerts.example.org").public_alerts_url


def test_detection_region_overrides_are_json_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LOOKOUT_DETECTION_REGIONS_JSON keeps its format (a JSON object, or empty for none);
    pydantic-settings parses it and refuses what is not an object of objects."""
    monkeypatch.setenv("LOOKOUT_ENV", "test")
    monkeypatch.setenv("LOOKOUT_DETECTION_REGIONS_JSON",
                       '{"us/wa": {"method": "threshold", "params": {"threshold": 3}}}')
    assert Settings().detection_regions_json == {
        "us/wa": {"method": "threshold", "params": {"threshold": 3}}}
    monkeypatch.setenv("LOOKOUT_DETECTION_REGIONS_JSON", "")
    assert Settings().detection_regions_json is None
    monkeypatch.delenv("LOOKOUT_DETECTION_REGIONS_JSON")
    assert Settings().detection_regions_json is None
    for bad in ('["us"]', '{"us": 3}', "not json"):
        monkeypatch.setenv("LOOKOUT_DETECTION_REGIONS_JSON", bad)
        with pytest.raises(ValueError, match="detection_regions_json"):
            Settings()


def test_the_alert_policy_is_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOOKOUT_ALERT_POLICY_JSON keeps its format (per region prefix, a list of severities or
    an object of options; empty for none); pydantic-settings parses it and refuses what is
    malformed when the settings load."""
    monkeypatch.setenv("LOOKOUT_ENV", "test")
    monkeypatch.setenv("LOOKOUT_ALERT_POLICY_JSON", '{"us/wa": ["warning", "critical"], '
                       '"us/or": {"severities": ["critical"], "lab_confirmed": true}}')
    assert Settings().alert_policy_json == {
        "us/wa": AlertRegionPolicy(severities=frozenset({"warning", "critical"})),
        "us/or": AlertRegionPolicy(severities=frozenset({"critical"}), lab_confirmed=True)}
    monkeypatch.setenv("LOOKOUT_ALERT_POLICY_JSON", "")
    assert Settings().alert_policy_json is None
    monkeypatch.delenv("LOOKOUT_ALERT_POLICY_JSON")
    assert Settings().alert_policy_json is None
    for bad in ('["critical"]', '{"us": 3}', '{"us": ["severe"]}',
                '{"us": {"severities": [], "lab_confirmd": true}}', "not json"):
        monkeypatch.setenv("LOOKOUT_ALERT_POLICY_JSON", bad)
        with pytest.raises(ValueError, match="alert_policy_json"):
            Settings()
