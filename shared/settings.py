"""Settings shared by every Lookout process, read once from the environment (prefix LOOKOUT_).

Every service reads the same `Settings`; a service only looks at the fields it needs.
Secrets have development defaults so `make run` works out of the box, and those defaults are
refused when `LOOKOUT_ENV` is anything other than `dev` or `test`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events import Severity

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_SECRET_KEY = "dev-only-secret-key-change-me"  # noqa: S105 - refused outside dev
DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - refused outside dev
DEV_TWILIO_AUTH_TOKEN = "dev-twilio-auth-token"  # noqa: S105 - refused outside dev
MIN_SECRET_BYTES = 32  # outside dev: the secret key and the admin token


class InsecureSettingsError(ValueError):
    """A secret was left at its development default outside dev mode."""


class AlertRegionPolicy(BaseModel):
    """Which new alerts of a region are approved without review (one value of
    LOOKOUT_ALERT_POLICY_JSON: an object of these options, or just the list of severities).

    severities: the severities approved by policy;
    lab_confirmed: a contamination alert also needs its substance identified by a
      confirmatory method (alerts' `CONFIRMATORY_METHODS`); overdose spikes name no
      substance, so severity alone decides for them;
    as_sold_novel: a `novel_substance` signal for exactly what the sample was sold as
      (cocaine in a sample sold as cocaine) may be approved too; by default it goes to review;
    second_reviewer: a critical alert reviewed by officials needs the approvals of two
      different reviewers, the second not the author of the last edit of its text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    severities: frozenset[Severity] = frozenset()
    lab_confirmed: bool = False
    as_sold_novel: bool = False
    second_reviewer: bool = False

    @model_validator(mode="before")
    @classmethod
    def _a_list_is_the_severities(cls, value: object) -> object:
        return {"severities": value} if isinstance(value, list) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOKOUT_", env_file=None, extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    var_dir: Path = REPO_ROOT / "var"

    # Database: SQLite under var/ by default, PostgreSQL in production.
    database_url: str = ""

    # Kafka: empty means "use the embedded Tansu broker on broker_host:broker_port".
    kafka_bootstrap: str = ""
    broker_host: str = "127.0.0.1"
    broker_port: int = 9092
    # Tansu's memory storage does not implement InitProducerId; real Kafka does.
    # None means: on for an external cluster, off for the embedded broker.
    kafka_idempotent_producer: bool | None = None
    # Partitions of every topic of the registry (`shared.topics`), and per topic by name
    # (JSON, e.g. {"overdose.reports.v1": 12}); a topic's DLQ has its topic's count.
    kafka_partitions: int = Field(default=4, ge=1)
    kafka_topic_partitions: dict[str, int] = Field(default_factory=dict)
    # How clients authenticate to a cluster (one Kafka user per service, docs/scaling.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = ""
    kafka_ca_file: str = ""  # the cluster's CA (PEM) for SSL / SASL_SSL; empty: system CAs
    kafka_replication_factor: int = Field(default=1, ge=1)  # of the topics Lookout creates

    # HTTP ports (all on `http_host`).
    http_host: str = "127.0.0.1"
    ingest_port: int = 8000
    alerts_port: int = 8001
    referrals_port: int = 8002
    dashboard_port: int = 8003
    detection_metrics_port: int = 9101
    alerts_worker_metrics_port: int = 9102
    relay_metrics_port: int = 9103
    # Base URL at which Twilio reaches the alerts service (status callbacks; webhook
    # signatures are checked against it); required outside dev and test.
    public_alerts_url: str = ""
    # Every HTTP service (shared/edge.py): a request body over this many bytes is refused
    # (413) before it is read (ingest's own limits below); the API docs (/docs, /redoc,
    # /openapi.json) and /metrics, None: on except in prod; with a metrics token set,
    # /metrics answers only to `Authorization: Bearer <token>` (and is on in prod too).
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    docs_enabled: bool | None = None
    metrics_enabled: bool | None = None
    metrics_token: str = ""

    # Secrets.
    secret_key: str = DEV_SECRET_KEY
    admin_token: str = DEV_ADMIN_TOKEN
    # Failed admin-token attempts per client (token bucket per process): a burst, then this
    # many a minute; past it 429 without the token being looked at.
    admin_failures_per_minute: float = Field(default=10.0, gt=0)
    admin_failures_burst: int = Field(default=10, ge=1)

    # SMS.
    sms_backend: Literal["outbox", "twilio"] = "outbox"
    sms_http_client: Literal["lean", "httpx"] = "lean"
    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: str = DEV_TWILIO_AUTH_TOKEN
    twilio_from: str = "+15005550006"
    twilio_messaging_service_sid: str = ""
    twilio_api_base_url: str = "https://api.twilio.com"
    # Messages per second per sender (1 for a long code, 100+ for a short code); 0: no limit.
    sms_rate_per_second: float = Field(default=1.0, ge=0)
    # Only for local development: accept unsigned Twilio webhooks.
    twilio_skip_signature_check: bool = False

    # Alert policy: in dev every alert is auto-approved; elsewhere only critical ones.
    auto_approve_severities: list[Severity] = Field(default_factory=lambda: _critical_only())
    # Alerts: per-region policy, JSON {"region prefix": ["critical", ...] or {options}}
    # (pydantic-settings parses it; an empty value is none); the longest matching prefix
    # wins, else auto_approve_severities.
    alert_policy_json: dict[str, AlertRegionPolicy] | None = None
    alert_merge_window_hours: float = 6.0  # signals of one region+substance merge within this
    alert_lifetime_hours: float = 72.0  # an alert not sent by then expires
    # Alerts sender: in-flight sends per worker (each delivery still claimed once), and how
    # long a delivery may stay `sending` before a restart reconciles it with the provider.
    sms_send_concurrency: int = Field(default=8, ge=1)
    sms_stale_sending_seconds: float = 30.0
    signup_code_ttl_minutes: float = 15.0
    signup_code_max_attempts: int = 5
    # Web signup against SMS pumping: the countries whose numbers may get a code (ISO 3166
    # codes; default: those of the region catalog), and codes per hour from one client
    # (an IPv4 address or IPv6 /64) and in all.
    signup_countries: list[str] = Field(default_factory=lambda: _served_countries())
    signup_codes_per_client_per_hour: int = Field(default=5, ge=0)
    signup_codes_per_hour: int = Field(default=300, ge=0)

    # Ingest: request body limits, per-API-key rate limit (requests/s and burst, in-process
    # per worker; rate 0 = no limit) and uvicorn workers for `lookout serve ingest`.
    ingest_max_json_bytes: int = 1_000_000
    ingest_max_csv_bytes: int = 20_000_000
    ingest_rate_per_second: float = Field(default=50.0, ge=0)
    ingest_rate_burst: float = Field(default=200.0, ge=1)
    ingest_workers: int = Field(default=1, ge=1)

    # Relay.
    relay_poll_interval: float = 0.05
    relay_batch_size: int = 500
    # Published rows are kept this long, to be published again when the broker loses them
    # (the embedded broker restarted empty, shared/relay/), then deleted.
    relay_retention_hours: float = Field(default=720.0, gt=0)
    # A standby relay tries to take over each table this often (s).
    relay_standby_poll_seconds: float = Field(default=1.0, gt=0)
    # `lookout run`: a process that exits is started again after this wait, doubled at each
    # exit in a row up to the max (back to the start after 30 s of running).
    run_restart_backoff_seconds: float = 1.0
    run_restart_backoff_max_seconds: float = 30.0

    # Detection (docs/detection.md): spike grouping level, event-time bucket, default method;
    # late events within the grace period are re-evaluated; one open signal per (region,
    # kind, substance) within the cooldown. Per-region overrides (method, its parameters,
    # contamination thresholds): JSON {"region prefix": {...}}, the longest prefix wins.
    detection_spike_level: Literal["postal_code", "county", "state"] = "postal_code"
    detection_spike_bucket: Literal["hour", "day", "week"] = "day"
    detection_spike_method: str = "poisson"
    detection_grace_hours: float = 48.0
    detection_cooldown_hours: float = 24.0
    # (pydantic-settings parses the JSON; an empty value is no override.)
    detection_regions_json: dict[str, dict[str, Any]] | None = None
    # Faust consumers: longest wait for a fetch to fill (faust hard-codes 1500 ms).
    stream_fetch_max_wait_ms: int = Field(default=10, ge=0)
    # Faust producers (changelogs, signals): how long a send waits to share a request with
    # others (faust's default, 0, makes a request per changelog write under load).
    stream_producer_linger_ms: int = Field(default=5, ge=0)
    # Consumer-group session: Tansu delays a first join by half of it, and a member that
    # misses heartbeats this long is dropped.
    stream_session_timeout: float = Field(default=8.0, gt=0)
    stream_heartbeat_interval: float = Field(default=2.0, gt=0)

    # Referrals: matching, conversation timing, retention of personal data.
    referrals_worker_metrics_port: int = 9104
    dashboard_worker_metrics_port: int = 9105
    # How often each dashboard web process reads the read model's change log for its live
    # streams (one query per process, whatever the number of open pages).
    dashboard_stream_poll_seconds: float = Field(default=0.1, gt=0)
    referrals_open_within_hours: float = 2.0  # "open now or within N hours"
    referrals_max_distance_km: float = 40.0
    referrals_followup_delay_seconds: float = 4 * 3600  # after the provider notice
    referrals_no_response_seconds: float = 24 * 3600  # options unanswered -> no_response
    referrals_retention_days: float = 30.0  # then contact_ref, free text, phone are purged
    referrals_tick_seconds: float = 15.0  # how often the worker looks for due follow-ups
    referrals_public_url: str = ""  # base URL for providers' signed links; empty: local
    referrals_link_days: float = Field(default=14.0, gt=0)  # a provider's link expires then
    # Provider link requests per client address (a token bucket: per minute, burst).
    referrals_link_rate_per_minute: float = Field(default=30.0, ge=0)
    referrals_link_burst: float = Field(default=10.0, ge=1)
    referrals_smtp_host: str = ""  # e-mail notices to providers; empty: e-mail disabled
    referrals_smtp_port: int = 25
    referrals_smtp_from: str = "referrals@lookout.invalid"
    # Provider webhooks may reach private and loopback addresses (a local test receiver);
    # refused in prod. Outside dev and test, webhooks must be https.
    referrals_webhook_allow_private: bool = False

    # Dashboard: officials' sessions, login throttling, the review credential it signs for
    # the alerts service (docs/dashboard.md). Keys: PEM; in dev/test, when unset, a pair is
    # derived from secret_key (shared/officials.py); required in prod.
    dashboard_session_idle_minutes: float = Field(default=30.0, gt=0)
    dashboard_session_absolute_hours: float = Field(default=12.0, gt=0)
    dashboard_login_max_failures: int = Field(default=5, ge=1)  # then the account is locked
    dashboard_lockout_minutes: float = Field(default=15.0, gt=0)
    dashboard_login_rate_per_minute: float = Field(default=20.0, ge=0)  # per client address
    dashboard_setup_link_hours: float = Field(default=72.0, gt=0)
    # TOTP second factor for reviewers and admins: None = required in prod only.
    dashboard_totp_required: bool | None = None
    dashboard_signing_key: str = ""
    dashboard_public_key: str = ""
    dashboard_credential_ttl_seconds: int = Field(default=60, ge=5, le=300)
    dashboard_public_url: str = ""  # base of setup links; empty: http://http_host:port
    dashboard_alerts_url: str = ""  # the alerts API the dashboard calls; empty: local

    @field_validator("detection_regions_json", "alert_policy_json", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env in ("dev", "test"):
            return self
        defaults = {
            "LOOKOUT_SECRET_KEY": self.secret_key == DEV_SECRET_KEY,
            "LOOKOUT_ADMIN_TOKEN": self.admin_token == DEV_ADMIN_TOKEN,
            "LOOKOUT_TWILIO_AUTH_TOKEN": self.sms_backend == "twilio"
            and self.twilio_auth_token == DEV_TWILIO_AUTH_TOKEN,
        }
        left = [name for name, is_default in defaults.items() if is_default]
        if left:
            raise InsecureSettingsError(
                f"{', '.join(left)} left at the development default; set them when "
                f"LOOKOUT_ENV={self.env}"
            )
        short = [name for name, value in (
            ("LOOKOUT_SECRET_KEY", self.secret_key), ("LOOKOUT_ADMIN_TOKEN", self.admin_token),
        ) if len(value.encode()) < MIN_SECRET_BYTES]
        if short:
            raise InsecureSettingsError(
                f"{', '.join(short)} shorter than {MIN_SECRET_BYTES} bytes; when "
                f"LOOKOUT_ENV={self.env} use e.g. `openssl rand -hex 32`")
        if self.twilio_skip_signature_check:
            raise InsecureSettingsError(
                "LOOKOUT_TWILIO_SKIP_SIGNATURE_CHECK is only allowed in dev or test"
            )
        if self.sms_backend == "outbox":
            raise InsecureSettingsError(
                f"LOOKOUT_SMS_BACKEND=outbox keeps texts in the database (dev only); set "
                f"twilio when LOOKOUT_ENV={self.env}")
        if not self.public_alerts_url:
            raise InsecureSettingsError(
                f"LOOKOUT_PUBLIC_ALERTS_URL is required when LOOKOUT_ENV={self.env}: Twilio's "
                "webhook signatures are checked against it")
        return self

    @model_validator(mode="after")
    def _refuse_private_webhooks_in_prod(self) -> Settings:
        if self.env == "prod" and self.referrals_webhook_allow_private:
            raise InsecureSettingsError(
                "LOOKOUT_REFERRALS_WEBHOOK_ALLOW_PRIVATE is only allowed in dev or test")
        return self

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.broker_host}:{self.broker_port}"

    @property
    def idempotent_producer(self) -> bool:
        if self.kafka_idempotent_producer is not None:
            return self.kafka_idempotent_producer
        return not self.embedded_broker

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL for SQLAlchemy: a plain `postgresql://` URI (as CloudNativePG and
        most providers hand it out) is driven by psycopg 3, the driver Lookout ships."""
        url = self.database_url or f"sqlite:///{self.var_dir / 'lookout.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url.removeprefix(plain)
        return url

    def service_url(self, port: int) -> str:
        return f"http://{self.http_host}:{port}"


def _critical_only() -> list[Severity]:
    return ["critical"]


def _served_countries() -> list[str]:
    from shared.regions import served_countries

    return served_countries()


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
