"""docker-compose.yml, checked without a Docker engine.

- it validates against the Compose specification's JSON Schema (vendored by check-jsonschema);
- every variable a service is given is one the service reads (ServiceSettings.environmentKeys
  in Shared/ServiceKit/ServiceSettings.swift, plus the order service's own, plus the
  OpenTelemetry SDK's);
- every ${VARIABLE} it needs is in .env.example, and .env itself is not committed;
- every service is given the one token secret, AUTH_JWT_SECRET, from .env and required there;
- each service connects as its own broker user and database role, the ones the definitions
  template and the init script create.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"order": "orders", "inventory": "inventory", "payment": "payments", "notification": "notifications"}
# Read by the OpenTelemetry SDK (swift-otel's bootstrap reads OTEL_* from the process environment),
# not by ServiceSettings: where traces go, and the name they carry.
OPENTELEMETRY = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def variables_services_read():
    source = (ROOT / "Shared/ServiceKit/ServiceSettings.swift").read_text()
    block = re.search(r"environmentKeys = \[(.*?)\]", source, flags=re.S).group(1)
    keys = set(re.findall(r'"([A-Z_]+)"', block))
    order = (ROOT / "Services/Order/OrderService/OrderSettings.swift").read_text()
    return keys, keys | set(re.findall(r'environment\["([A-Z_]+)"\]', order))


def test_the_file_validates_against_the_compose_specification():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_are_given_only_variables_they_read():
    common, order = variables_services_read()
    assert "AMQP_URL" in common and "DATABASE_URL" in common
    for name in SERVICES:
        environment = compose()["services"][name]["environment"]
        allowed = (order if name == "order" else common) | OPENTELEMETRY
        assert set(environment) <= allowed, f"{name} is given {set(environment) - allowed}, which it never reads"
        assert {"AMQP_URL", "DATABASE_URL", "DATABASE_SCHEMA", "HTTP_PORT"} <= set(environment)
        assert environment["DATABASE_SCHEMA"] == SERVICES[name]


def test_every_needed_variable_is_in_env_example_and_env_is_not_committed():
    needed = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#")}
    assert needed <= example, f"missing from .env.example: {needed - example}"
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == ""


def test_every_service_gets_the_shared_token_secret_from_env():
    common, _ = variables_services_read()
    assert "AUTH_JWT_SECRET" in common
    for name in SERVICES:
        value = compose()["services"][name]["environment"]["AUTH_JWT_SECRET"]
        # Required (`:?`): a service without it refuses to start, so compose refuses first.
        assert re.fullmatch(r"\$\{AUTH_JWT_SECRET:\?[^}]+\}", value), f"{name}: AUTH_JWT_SECRET is {value!r}"
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    # No usable default: a published key would sign anyone's tokens. The comment says how to make one.
    assert example["AUTH_JWT_SECRET"] == ""
    assert "openssl rand -hex 32" in (ROOT / ".env.example").read_text()


def test_each_service_uses_its_own_credentials_which_the_broker_and_database_create():
    definitions = json.loads((ROOT / "deploy/rabbitmq/definitions.template.json").read_text())
    broker_users = {user["name"] for user in definitions["users"]}
    init = (ROOT / "deploy/postgres/init.sh").read_text()
    for name in SERVICES:
        environment = compose()["services"][name]["environment"]
        amqp_user = re.match(r"amqp://([^:]+):", environment["AMQP_URL"]).group(1)
        db_role = re.match(r"postgres://([^:]+):", environment["DATABASE_URL"]).group(1)
        assert amqp_user == name and amqp_user in broker_users
        assert db_role == f"bazaar_{name}" and f"'{db_role}'" in init
        assert environment["AMQP_DECLARE_TOPOLOGY"] == "none", "the definitions own the topology"


def test_services_wait_for_a_healthy_broker_and_database_and_check_their_own_health():
    services = compose()["services"]
    for name in SERVICES:
        service = services[name]
        assert service["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}, "postgres": {"condition": "service_healthy"}}
        assert "/health/ready" in " ".join(service["healthcheck"]["test"])
        assert service["build"]["args"]["SERVICE"] == name
        assert service["restart"] == "unless-stopped"
    assert "healthcheck" in services["rabbitmq"] and "healthcheck" in services["postgres"]
