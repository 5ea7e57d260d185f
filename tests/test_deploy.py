"""The deployment files, checked without a Docker engine.

docker-compose.yml is validated and resolved by `docker-compose config` (Debian's package;
.ci/run installs it) and compared with what the code says: the process list
(services.stack.PROCESSES), the `lookout` CLI and the ports in Settings. deploy/prometheus.yml
and the Grafana provisioning are compared with the same process list and the metrics the code
defines.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli import build_parser
from services.stack import PROCESSES, http_ports, metrics_ports
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
PROMETHEUS_FILE = REPO_ROOT / "deploy" / "prometheus.yml"
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"

# Variable names that hold secrets; none may have a literal value or default in the file.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|PRIVATE")
# The secrets the stack must refuse to start without.
REQUIRED_SECRETS = {
    "LOOKOUT_SECRET_KEY",
    "LOOKOUT_ADMIN_TOKEN",
    "LOOKOUT_TWILIO_AUTH_TOKEN",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    *(f"KAFKA_{user.upper()}_PASSWORD" for user in (
        "broker", "admin", "relay", "ingest", "detection", "alerts", "referrals", "dashboard")),
}
# Workers that share their topics' partitions (or, the relay, stand by) and run as replicas.
REPLICATED = ("relay", "detection", "alerts-worker", "referrals-worker")
# The Kafka user of each process that connects to Kafka (deploy/k8s/users.yaml's too, but
# the relay: compose runs one relay for every outbox).
KAFKA_USERS = {"topics": "admin", "relay": "relay", "ingest": "ingest",
               "detection": "detection", "alerts": "alerts", "alerts-worker": "alerts",
               "referrals": "referrals", "referrals-worker": "referrals",
               "dashboard": "dashboard", "dashboard-worker": "dashboard"}
# `${NAME:?message}` / `${NAME?message}`: interpolation that fails when NAME is unset.
REQUIRED_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")
ANY_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
SETUP_SERVICES = {"migrate": ["db", "upgrade"], "topics": ["topics"]}


# --- running docker-compose ----------------------------------------------------------------


def _compose_binary() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        message = (
            "the `docker-compose` binary is not on PATH; install Debian's package "
            "(`apt-get install -y docker-compose`, as .ci/run does) to check docker-compose.yml"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _required_variables() -> set[str]:
    return set(REQUIRED_INTERPOLATION.findall(COMPOSE_FILE.read_text()))


def _dummy(name: str) -> str:
    """A recognisable, URL-safe stand-in for a required variable, long enough for a secret
    (32 bytes in prod)."""
    return f"dummy-{name.lower().replace('_', '-')}".ljust(40, "x")


def _compose_env(unset: str | None = None) -> dict[str, str]:
    """The caller's environment without anything that could change the result (the file's
    variables, COMPOSE_*), with every required variable set to its dummy (but `unset`)."""
    referenced = set(ANY_INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in referenced and not key.startswith(("COMPOSE_", "LOOKOUT_"))
    }
    env.update({name: _dummy(name) for name in _required_variables() if name != unset})
    return env


def _run_compose(
    tmp_dir: Path, *args: str, unset: str | None = None
) -> subprocess.CompletedProcess[str]:
    empty_env_file = tmp_dir / "empty.env"  # so a developer's .env file is not read
    empty_env_file.write_text("")
    return subprocess.run(
        [_compose_binary(), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE),
         "--project-directory", str(REPO_ROOT), *args],
        env=_compose_env(unset), capture_output=True, text=True, timeout=120, check=False,
    )


def _load_yaml(text: str) -> Any:
    """PyYAML when this environment has it; otherwise the interpreter that runs Debian's
    docker-compose 1.x, which is written in Python on top of PyYAML."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    compose = _compose_binary()
    with open(compose, "rb") as f:
        first_line = f.readline().decode(errors="replace").strip()
    interpreter = first_line[2:].split() if first_line.startswith("#!") else []
    if not interpreter or "python" not in " ".join(interpreter):
        pytest.fail(f"cannot read YAML: no PyYAML here, and {compose} is not a Python script "
                    "(a Compose v2 binary should have accepted `config --format json`)")
    proc = subprocess.run(
        [*interpreter, "-c",
         "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, f"converting YAML with {interpreter}: {proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """docker-compose.yml as `docker-compose config` resolves it (anchors, merge keys and
    variables expanded), with the required variables set to dummies."""
    tmp_dir = tmp_path_factory.mktemp("compose")
    # Compose v2 prints JSON; Debian's 1.29 does not know --format (it prints its usage, and
    # exits 0), so fall back to its YAML.
    proc = _run_compose(tmp_dir, "config", "--format", "json")
    if proc.returncode == 0 and proc.stdout.lstrip().startswith("{"):
        yield json.loads(proc.stdout)
        return
    proc = _run_compose(tmp_dir, "config")  # Compose v1 prints YAML only
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    yield _load_yaml(proc.stdout)


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return dict(services[name])


def _lookout_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the Lookout image (their command starts with `lookout`)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if isinstance(service.get("command"), list) and service["command"][:1] == ["lookout"]
    }


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE strings
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def _default_ports() -> dict[str, int]:
    """The port each process serves /metrics on, from Settings' defaults (not this shell's)."""
    settings = Settings.model_construct()
    ports = {**http_ports(settings), **metrics_ports(settings)}
    assert set(ports) == set(PROCESSES), "stack.http_ports/metrics_ports must cover PROCESSES"
    return ports


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_file_is_valid(tmp_path: Path) -> None:
    proc = _run_compose(tmp_path, "config", "--quiet")
    assert proc.returncode == 0, f"`docker-compose config` rejected the file:\n{proc.stderr}"


def test_compose_refuses_to_run_without_each_secret(tmp_path: Path) -> None:
    required = _required_variables()
    missing = REQUIRED_SECRETS - required
    assert not missing, f"not required (`${{NAME:?message}}`) in docker-compose.yml: {missing}"
    for name in sorted(REQUIRED_SECRETS):
        proc = _run_compose(tmp_path, "config", "--quiet", unset=name)
        assert proc.returncode != 0, f"docker-compose config passed without {name}"
        assert name in proc.stderr, f"the error without {name} does not name it: {proc.stderr}"


def test_every_process_has_a_service_running_its_command(compose: dict[str, Any]) -> None:
    for name, args in PROCESSES.items():
        assert _service(compose, name).get("command") == ["lookout", *args], name
    for name, args in SETUP_SERVICES.items():
        assert _service(compose, name).get("command") == ["lookout", *args], name


def test_every_lookout_command_exists_in_the_cli(compose: dict[str, Any]) -> None:
    services = _lookout_services(compose)
    assert set(PROCESSES) | set(SETUP_SERVICES) <= set(services)
    parser = build_parser()
    for name, service in services.items():
        try:
            parser.parse_args(service["command"][1:])
        except SystemExit:
            pytest.fail(f"service {name!r}: `{' '.join(service['command'])}` is not a valid "
                        "lookout command")


def test_lookout_services_share_one_image_built_from_the_dockerfile(
    compose: dict[str, Any],
) -> None:
    services = _lookout_services(compose)
    images = {service.get("image") for service in services.values()}
    assert len(images) == 1 and None not in images, f"one image name for all: {images}"
    for name, service in services.items():
        build = service.get("build")
        assert isinstance(build, dict), f"{name}: no build section"
        context = Path(build["context"])
        assert context.resolve() == REPO_ROOT, name
        # Compose 1.x keeps `dockerfile` relative to the context; allow an absolute path too.
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "requirements.lock" in dockerfile and "pip install --no-deps ." in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert re.search(r'^CMD \["lookout", "--help"\]', dockerfile, re.M)


def test_processes_start_after_migrations_and_topics(compose: dict[str, Any]) -> None:
    def conditions(service: dict[str, Any]) -> dict[str, str]:
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            return dict.fromkeys(depends, "service_started")
        return {name: spec.get("condition", "service_started") for name, spec in depends.items()}

    for name in PROCESSES:
        after = conditions(_service(compose, name))
        for setup in SETUP_SERVICES:
            assert after.get(setup) == "service_completed_successfully", (name, setup)
    assert conditions(_service(compose, "migrate")).get("postgres") == "service_healthy"
    assert conditions(_service(compose, "topics")).get("kafka") == "service_healthy"
    for name in SETUP_SERVICES:
        assert str(_service(compose, name).get("restart", "no")) == "no", name


def test_kafka_is_a_pinned_single_node_kraft_broker(compose: dict[str, Any]) -> None:
    kafka = _service(compose, "kafka")
    image, _, tag = str(kafka.get("image")).partition(":")
    assert image == "apache/kafka", kafka.get("image")
    assert re.fullmatch(r"(3\.9|4\.\d+)\.\d+", tag), f"pin a 3.9.x or 4.x tag, not {tag!r}"
    env = _environment(kafka)
    assert set((env.get("KAFKA_PROCESS_ROLES") or "").split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env.get("CLUSTER_ID"), "KRaft storage is formatted with CLUSTER_ID"
    node_id = env.get("KAFKA_NODE_ID")
    assert node_id and (env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or "").startswith(f"{node_id}@")
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env.get(key) == "1", key
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false"
    assert env.get("KAFKA_ADVERTISED_LISTENERS") == "SASL_PLAINTEXT://kafka:9092"
    test = " ".join(kafka.get("healthcheck", {}).get("test", []))
    assert "localhost:9092" in test and ("broker-api-versions" in test or "topics" in test)
    for name in _lookout_services(compose):
        assert _environment(_service(compose, name)).get("LOOKOUT_KAFKA_BOOTSTRAP") == (
            "kafka:9092"), name


def test_workers_run_as_replicas(compose: dict[str, Any]) -> None:
    partitions = Settings.model_construct().kafka_partitions
    for name in REPLICATED:
        replicas = (_service(compose, name).get("deploy") or {}).get("replicas")
        assert isinstance(replicas, int) and 2 <= replicas <= partitions, (name, replicas)
        assert not _service(compose, name).get("ports"), f"{name}: a replica publishes a port"
        assert not _service(compose, name).get("container_name"), name  # would clash


def _jaas_users(jaas: str) -> dict[str, str]:
    assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required ")
    assert jaas.endswith(";")
    return dict(re.findall(r'\buser_([a-z]+)="([^"]*)"', jaas))


def test_kafka_clients_authenticate_each_as_its_own_user(compose: dict[str, Any]) -> None:
    kafka = _environment(_service(compose, "kafka"))
    protocols = dict(item.split(":") for item in
                     (kafka.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP") or "").split(","))
    controllers = set((kafka.get("KAFKA_CONTROLLER_LISTENER_NAMES") or "").split(","))
    listeners = [item.split("://")[0] for item in (kafka.get("KAFKA_LISTENERS") or "").split(",")]
    client_listeners = [name for name in listeners if name not in controllers]
    assert client_listeners, "no listener for clients"
    for name in client_listeners:
        assert protocols.get(name, name).startswith("SASL_"), f"{name} takes anonymous clients"
    assert kafka.get("KAFKA_SASL_ENABLED_MECHANISMS") == "PLAIN"
    broker_users = _jaas_users(
        kafka.get("KAFKA_LISTENER_NAME_SASL__PLAINTEXT_PLAIN_SASL_JAAS_CONFIG") or "")
    dummies = {_dummy(name) for name in _required_variables()}
    assert set(broker_users.values()) <= dummies, "a broker password not from the environment"
    assert len(set(broker_users.values())) == len(broker_users), "two users share a password"
    services = _lookout_services(compose)
    assert set(services) - {"migrate"} == set(KAFKA_USERS), "a Kafka client without a user"
    for name, user in KAFKA_USERS.items():
        env = _environment(services[name])
        assert env.get("LOOKOUT_KAFKA_SECURITY_PROTOCOL") == "SASL_PLAINTEXT", name
        assert env.get("LOOKOUT_KAFKA_SASL_MECHANISM") == "PLAIN", name
        assert env.get("LOOKOUT_KAFKA_USERNAME") == user, name
        assert env.get("LOOKOUT_KAFKA_PASSWORD") == _dummy(f"KAFKA_{user.upper()}_PASSWORD"), name
        assert broker_users.get(user) == env["LOOKOUT_KAFKA_PASSWORD"], f"{name}: unknown user"
    assert "LOOKOUT_KAFKA_PASSWORD" not in _environment(services["migrate"])
    # The healthcheck's client authenticates too (as the broker's own user).
    test = " ".join(_service(compose, "kafka")["healthcheck"]["test"])
    assert "--command-config" in test and "security.protocol=SASL_PLAINTEXT" in test
    assert kafka.get("HEALTHCHECK_KAFKA_PASSWORD") == broker_users["broker"]


def test_http_services_have_healthchecks_and_published_ports(compose: dict[str, Any]) -> None:
    for name, port in http_ports(Settings.model_construct()).items():
        service = _service(compose, name)
        healthcheck = service.get("healthcheck") or {}
        test = healthcheck.get("test") or []
        assert not healthcheck.get("disable") and test, f"{name}: no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
        assert f"127.0.0.1:{port}/healthz" in " ".join(test), f"{name}: {test}"
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")  # the one-liner is valid Python
        published = {
            (int(p["published"]), int(p["target"])) if isinstance(p, dict)
            else tuple(int(part) for part in str(p).rsplit(":", 2)[-2:])
            for p in service.get("ports", [])
        }
        assert (port, port) in published, f"{name}: port {port} not published: {published}"


def test_lookout_environment_is_production(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres = _environment(_service(compose, "postgres"))
    assert postgres.get("POSTGRES_DB") == "lookout"
    for name in _lookout_services(compose):
        env = _environment(_service(compose, name))
        assert env.get("LOOKOUT_ENV") == "prod", name
        assert env.get("LOOKOUT_HTTP_HOST") == "0.0.0.0", name
        url = env.get("LOOKOUT_DATABASE_URL") or ""
        assert re.fullmatch(r"postgresql\+psycopg://[^@/]+@postgres:5432/lookout", url), url
        # The settings the container would read validate in prod (no development secrets).
        for key in list(os.environ):
            if key.startswith("LOOKOUT_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("LOOKOUT_") and value is not None:
                monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.env == "prod" and not settings.embedded_broker
        assert settings.secret_key == _dummy("LOOKOUT_SECRET_KEY"), name


def test_no_secret_has_a_literal_value_or_default(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    for number, line in enumerate(text.splitlines(), 1):
        code = re.sub(r"(^|\s)#.*$", "", line)
        for match in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-=+])", code):
            assert not SECRET_NAME.search(match[1]), f"line {number}: default for a secret"
        setting = re.match(r"\s*(?:-\s*)?[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?\s*[:=]\s*(.*)$",
                           code)
        if setting and SECRET_NAME.search(setting[1]) and setting[2].strip():
            value = setting[2].strip().strip("\"'")
            assert REQUIRED_INTERPOLATION.fullmatch(value), f"line {number}: literal secret"
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", code):
            assert REQUIRED_INTERPOLATION.fullmatch(password), f"line {number}: URL password"
    # And as resolved: every secret-like value comes from the (dummy) environment.
    dummies = {_dummy(name) for name in _required_variables()}
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) and value is not None:
                assert value in dummies, f"{name}: {key} is not taken from the environment"


def test_prometheus_mounts_the_scrape_config(compose: dict[str, Any]) -> None:
    prometheus = _service(compose, "prometheus")
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", str(prometheus.get("image")))
    mounts = set()
    for volume in prometheus.get("volumes", []):
        if isinstance(volume, dict):
            mounts.add((str(volume.get("source")), str(volume.get("target"))))
        else:
            source, target = str(volume).split(":")[:2]
            mounts.add((source, target))
    assert (str(PROMETHEUS_FILE), "/etc/prometheus/prometheus.yml") in mounts, mounts
    grafana = _service(compose, "grafana")
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", str(grafana.get("image")))


# --- deploy/prometheus.yml -----------------------------------------------------------------


def _scrape_targets_by_regex(text: str) -> dict[str, set[str]]:
    """job name -> host:port targets, for the plain layout of deploy/prometheus.yml."""
    targets: dict[str, set[str]] = {}
    job = ""
    in_list = False
    names: list[str] = []  # of a dns_sd_configs entry, until its port
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if match := re.match(r"\s*(?:-\s*)?job_name:\s*[\"']?([^\"'\s]+)", line):
            job, in_list, names = match[1], False, []
            targets.setdefault(job, set())
        elif match := re.match(r"\s*-\s*names:\s*\[(.*)\]\s*$", line):
            names, in_list = re.findall(r"[\w.-]+", match[1]), False
        elif names and (match := re.match(r"\s*port:\s*(\d+)\s*$", line)):
            targets.setdefault(job, set()).update(f"{n}:{match[1]}" for n in names)
            names = []
        elif match := re.match(r"\s*(?:-\s*)?targets:\s*(.*)$", line):
            in_list = not match[1]
            targets.setdefault(job, set()).update(re.findall(r"[\w.-]+:\d+", match[1]))
        elif in_list and (match := re.match(r"\s*-\s*[\"']?([\w.-]+:\d+)", line)):
            targets.setdefault(job, set()).add(match[1])
        else:
            in_list = False
    return targets


def _scrape_targets() -> dict[str, set[str]]:
    text = PROMETHEUS_FILE.read_text()
    by_regex = _scrape_targets_by_regex(text)
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        assert all(
            re.fullmatch(r"\s*metrics_path:\s*[\"']?/metrics[\"']?\s*", line)
            for line in text.splitlines() if "metrics_path" in line
        ), "every job scrapes /metrics"
        return by_regex
    targets: dict[str, set[str]] = {}
    for job in yaml.safe_load(text)["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        found = targets.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            found.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type") == "A" and dns.get("port"), job["job_name"]
            found.update(f"{name}:{dns['port']}" for name in dns["names"])
    assert targets == by_regex, "the regex reading of prometheus.yml disagrees with PyYAML"
    return targets


def test_prometheus_finds_every_replica_by_dns() -> None:
    """A replicated worker's service name resolves to all its replicas (a static target
    would be scraped at one of them, whichever the resolver gives first)."""
    text = PROMETHEUS_FILE.read_text()
    ports = _default_ports()
    for name in REPLICATED:
        job = re.search(rf"job_name:\s*{re.escape(name)}\s*\n(.*?)(?=\n\s*- job_name:|\Z)",
                        text, re.S)
        assert job, f"no job {name}"
        assert "dns_sd_configs:" in job[1] and "static_configs" not in job[1], name
        assert re.search(rf"port:\s*{ports[name]}\b", job[1]), name


def test_prometheus_scrapes_every_process() -> None:
    targets = _scrape_targets()
    all_targets = set().union(*targets.values())
    for name, port in _default_ports().items():
        assert f"{name}:{port}" in all_targets, f"prometheus.yml does not scrape {name}:{port}"


# --- deploy/grafana ------------------------------------------------------------------------


def _defined_metric_names() -> set[str]:
    names: set[str] = set()
    for package in ("shared", "services"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"'](lookout_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_grafana_dashboard_uses_the_provisioned_datasource_and_real_metrics() -> None:
    datasource_file = (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "url: http://prometheus:9090" in datasource_file
    uids = set(re.findall(r"^\s*uid:\s*(\S+)", datasource_file, re.M))
    provider = (GRAFANA_DIR / "provisioning" / "dashboards" / "lookout.yml").read_text()
    assert re.search(r"^\s*path:\s*/etc/grafana/dashboards\s*$", provider, re.M)
    dashboards = list((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert dashboards, "no dashboard JSON"
    defined = _defined_metric_names()
    used: set[str] = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, (path.name, panel["title"])
                used.update(re.findall(r"\blookout_[a-z0-9_]+", target["expr"]))
    for metric in used:
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        assert metric in defined or base in defined, f"{metric} is not defined in the code"
    for metric in ("lookout_http_requests_total", "lookout_http_request_duration_seconds_bucket",
                   "lookout_agent_messages_total", "lookout_alerts_sms_total"):
        assert metric in used, f"the dashboard does not chart {metric}"
    assert any(re.fullmatch(r"lookout_\w*outbox_lag_rows", m) for m in used), "no outbox lag"


def _pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)$", path.read_text(), re.M)
    return {name.lower(): version for name, version in found}


def test_the_image_lock_has_no_dev_tools_and_the_same_versions() -> None:
    """The image installs requirements.lock (what the services run on); the venv and CI
    install requirements-dev.lock (that plus tests and tools). Both pin the same versions,
    so what was tested is what ships."""
    image, dev = _pins(REPO_ROOT / "requirements.lock"), _pins(REPO_ROOT / "requirements-dev.lock")
    assert {"pytest", "playwright", "ruff", "mypy", "schemathesis"} <= set(dev) - set(image)
    assert {"faust-streaming", "fastapi", "twilio", "sqlalchemy"} <= set(image)
    assert all(dev.get(name) == version for name, version in image.items()), {
        name: (version, dev.get(name)) for name, version in image.items()
        if dev.get(name) != version}
