"""The Kubernetes manifests in deploy/kubernetes, checked without a cluster.

    python3 -m pytest -q Tests/Deploy/test_kubernetes.py      # from the repository's root

A small kustomize-like renderer (below) builds each overlay the way `kubectl apply -k` would, for
the kustomize fields the manifests use: resources, namespace, patches (strategic-merge or JSON 6902,
by kind and name or by `target`), replicas, images, secretGenerator. The rendered core objects are
validated against Kubernetes 1.30's schemas (kubernetes_validate, strict); the operators' objects
(RabbitMQ, CloudNativePG) are checked field by field, and the broker topology against the contract
below. Needs PyYAML and kubernetes-validate (`make test` installs them); no network, no cluster.
"""

import base64
import copy
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["local", "production"]
NAMESPACE = "bazaar"
CLUSTER = "bazaar-rabbitmq"
K8S_VERSION = "1.30"

SERVICES = ["order", "inventory", "payment", "notification"]
PORT = {"order": 8080, "inventory": 8081, "payment": 8082, "notification": 8083}
SCHEMA = {"order": "orders", "inventory": "inventory", "payment": "payments", "notification": "notifications"}
EXCHANGE = {"order": "orders", "inventory": "inventory", "payment": "payments", "notification": "notifications"}
DB_ROLE = {service: f"bazaar_{service}" for service in SERVICES}


def variables_services_read():
    """Every environment variable a service reads (ServiceSettings.environmentKeys), and order's own."""
    source = (ROOT / "Shared/ServiceKit/ServiceSettings.swift").read_text()
    block = re.search(r"environmentKeys = \[(.*?)\]", source, flags=re.S).group(1)
    order = (ROOT / "Services/Order/OrderService/OrderSettings.swift").read_text()
    return set(re.findall(r'"([A-Z_]+)"', block)), set(re.findall(r'environment\["([A-Z_]+)"\]', order))


SERVICE_ENV, ORDER_ENV = variables_services_read()
# What every Deployment sets (the rest of SERVICE_ENV is optional, with defaults).
REQUIRED_ENV = {
    "HTTP_HOST", "HTTP_PORT", "AMQP_URL", "DATABASE_URL", "DATABASE_SCHEMA", "INSTANCE_NAME", "OUTBOX_POLL_INTERVAL_MS",
    "OUTBOX_RETENTION_HOURS", "AMQP_DECLARE_TOPOLOGY", "AUTH_JWT_SECRET",
}
# The HS256 key of the APIs' bearer tokens: one Secret, shared by the four services.
AUTH_SECRET, AUTH_SECRET_KEY = "bazaar-auth", "jwt-secret"
MINIMUM_AUTH_SECRET_BYTES = int(re.search(  # the services refuse a shorter one
    r"minimumSecretBytes = (\d+)", (ROOT / "Shared/Auth/TokenAuthority.swift").read_text()).group(1))
CORE_KINDS = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Namespace", "Secret"}

# ---- the broker topology: the contract ----------------------------------------------------------
# The same list as ServiceTopology.system() derives from EventCatalogue.subscriptions in the Swift
# code, where a Swift test compares it with the code's catalogue; test_contract_matches_event_catalogue
# below also compares it with the generated docs/event-catalogue.md. Change all of them together.
DELIVERY_LIMIT = 20  # ServiceTopology.defaultDeliveryLimit
RETRY_DELAYS = [1, 5, 30]  # seconds: ServiceTopology.retryDelays, one retry queue each
RETRY_QUEUES = {s: [f"{s}.retry.{delay}s" for delay in RETRY_DELAYS] for s in SERVICES}
RETRY_BINDINGS = {  # a failed delivery into the retry queue of its attempt, and back to the work queue
    (f"{s}.retry", queue, queue) for s in SERVICES for queue in RETRY_QUEUES[s] + [s]
}
BINDINGS = {  # (exchange, queue, routing key)
    ("orders", "inventory", "order.placed.v1"), ("orders", "inventory", "order.confirmed.v1"),
    ("orders", "inventory", "order.cancelled.v1"), ("orders", "inventory", "catalogue.requested.v1"),
    ("orders", "payment", "order.cancelled.v1"),
    ("orders", "notification", "order.confirmed.v1"), ("orders", "notification", "order.cancelled.v1"),
    ("inventory", "order", "product.updated.v1"), ("inventory", "order", "product.snapshot.v1"), ("inventory", "order", "stock.rejected.v1"),
    ("inventory", "payment", "stock.reserved.v1"),
    ("payments", "order", "payment.captured.v1"), ("payments", "order", "payment.declined.v1"),
    ("payments", "notification", "payment.refunded.v1"),
} | RETRY_BINDINGS | {(f"{s}.dlx", f"{s}.dlq", f"{s}.dlq") for s in SERVICES}
EXCHANGES = {(x, "topic") for x in EXCHANGE.values()} | {(f"{s}.{kind}", "direct") for s in SERVICES for kind in ("retry", "dlx")}
# Dead-lettering at least once (the broker keeps a message until its target queue confirmed it)
# needs reject-publish; the dead-letter queue drops nothing and its limit is effectively none.
AT_LEAST_ONCE = {"x-delivery-limit": DELIVERY_LIMIT, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
QUEUES = {
    **{s: {"x-queue-type": "quorum", "x-dead-letter-exchange": f"{s}.dlx",
           "x-dead-letter-routing-key": f"{s}.dlq", **AT_LEAST_ONCE} for s in SERVICES},
    **{queue: {"x-queue-type": "quorum", "x-message-ttl": delay * 1000, "x-dead-letter-exchange": f"{s}.retry",
               "x-dead-letter-routing-key": s, **AT_LEAST_ONCE}
       for s in SERVICES for queue, delay in zip(RETRY_QUEUES[s], RETRY_DELAYS)},
    **{f"{s}.dlq": {"x-queue-type": "quorum", "x-delivery-limit": 1_000_000, "x-overflow": "reject-publish"} for s in SERVICES},
}
PERMISSIONS = {  # user: (configure, write, read)
    s: ("^$", rf"^({EXCHANGE[s]}|{s}\.dlx|{s}\.retry)$", rf"^{s}$") for s in SERVICES
}
PUBLISHED = {  # the routing keys each service publishes (docs/event-catalogue.md)
    "order": {"order.placed.v1", "order.confirmed.v1", "order.cancelled.v1", "catalogue.requested.v1"},
    "inventory": {"stock.reserved.v1", "stock.rejected.v1", "stock.released.v1", "product.updated.v1", "product.snapshot.v1"},
    "payment": {"payment.captured.v1", "payment.declined.v1", "payment.refunded.v1"},
    "notification": {"notification.sent.v1"},
}
TOPIC_PERMISSIONS = {  # user: (exchange, write): only the routing keys of the user's own events
    "order": ("orders", r"^(order|catalogue)\..*"), "inventory": ("inventory", r"^(stock|product)\..*"),
    "payment": ("payments", r"^payment\..*"), "notification": ("notifications", r"^notification\..*"),
}


# ---- a minimal kustomize ------------------------------------------------------------------------
def load_documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def merge(base, patch):
    """Strategic merge, simplified: maps merge (null deletes), lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base + patch):
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old["name"] == item["name"]), None)
            merged.append(copy.deepcopy(item)) if index is None else merged.__setitem__(index, merge(merged[index], item))
        return merged
    return copy.deepcopy(patch)


def json_patch(document, operations):
    """JSON 6902: add, replace, remove (paths into maps and list indexes)."""
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if operation["op"] == "remove":
            del node[key]
        else:
            assert operation["op"] in ("add", "replace"), operation
            assert operation["op"] == "add" or key in (range(len(node)) if isinstance(node, list) else node), operation
            node[key] = copy.deepcopy(operation["value"])


def render(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        documents += render(path) if path.is_dir() else load_documents(path)
    for generator in kustomization.get("secretGenerator", []):
        assert kustomization.get("generatorOptions", {}).get("disableNameSuffixHash"), \
            "operators reference these Secrets by name: generated names must not be hashed"
        data = dict(literal.split("=", 1) for literal in generator["literals"])
        documents.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]},
                          "type": generator.get("type", "Opaque"),
                          "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    for patch in kustomization.get("patches", []):
        bodies = load_documents(directory / patch["path"]) if "path" in patch else [yaml.safe_load(patch["patch"])]
        for body in bodies:
            target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
            matches = [i for i, d in enumerate(documents) if d["kind"] == target["kind"]
                       and target.get("name", d["metadata"]["name"]) == d["metadata"]["name"]]
            assert matches, f"{directory.name}: patch {patch} matches nothing"
            for i in matches:
                if isinstance(body, list):
                    json_patch(documents[i], body)
                else:
                    body = {**body, "metadata": {**body["metadata"], "name": documents[i]["metadata"]["name"]}}
                    documents[i] = merge(documents[i], body)
    for replicas in kustomization.get("replicas", []):
        targets = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == replicas["name"]]
        assert targets, f"replicas: no Deployment {replicas['name']}"
        for document in targets:
            document["spec"]["replicas"] = replicas["count"]
    for image in kustomization.get("images", []):
        used = False
        for container in (c for d in documents if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]):
            if container["image"].split(":")[0] == image["name"]:
                used = True
                tag = image.get("newTag", container["image"].partition(":")[2])
                container["image"] = f"{image.get('newName', image['name'])}:{tag}"
        assert used, f"images: nothing uses {image['name']}"
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] != "Namespace":
                document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


# ---- helpers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    return request.param, render(KUBERNETES / "overlays" / request.param)


def of_kind(documents, kind):
    return [d for d in documents if d["kind"] == kind]


def named(documents, kind, name):
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def secret_value(secret, key):
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def kustomizations():
    return sorted(KUBERNETES.rglob("kustomization.yaml"))


# ---- files ---------------------------------------------------------------------------------------
def test_every_yaml_file_parses():
    files = sorted(KUBERNETES.rglob("*.yaml")) + sorted(KUBERNETES.rglob("*.yml"))
    assert len(files) > 10
    for path in files:
        documents = load_documents(path)  # raises on a syntax error
        assert documents, f"{path} is empty"
        for document in documents:
            if isinstance(document, dict):
                assert {"apiVersion", "kind"} <= document.keys(), f"{path}: a document without apiVersion/kind"
            else:  # a JSON 6902 patch
                assert all({"op", "path"} <= op.keys() for op in document), f"{path}: not a JSON patch"


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_kustomization_references_exist(path):
    kustomization = yaml.safe_load(path.read_text())
    assert kustomization["kind"] == "Kustomization"
    for entry in kustomization.get("resources", []):
        resource = path.parent / entry
        assert resource.is_file() or (resource / "kustomization.yaml").is_file(), f"{path}: {entry} is missing"
    for patch in kustomization.get("patches", []):
        assert "patch" in patch or (path.parent / patch["path"]).is_file(), f"{path}: patch {patch} is missing"
    unknown = set(kustomization) - {"apiVersion", "kind", "namespace", "resources", "patches", "replicas",
                                    "images", "secretGenerator", "generatorOptions"}
    assert not unknown, f"{path}: the test renderer doesn't implement {unknown}"


def test_every_manifest_file_is_used_and_no_secret_is_committed_to_a_kustomization():
    used = set()
    for path in kustomizations():
        kustomization = yaml.safe_load(path.read_text())
        used |= {(path.parent / e).resolve() for e in kustomization.get("resources", [])}
        used |= {(path.parent / p["path"]).resolve() for p in kustomization.get("patches", []) if "path" in p}
    examples = sorted(KUBERNETES.rglob("secret-example.yaml"))
    assert examples, "secret-example.yaml shows the Secrets an overlay must provide"
    assert not {e.resolve() for e in examples} & used, "secret-example.yaml must not be in a kustomization"
    for path in KUBERNETES.rglob("*.yaml"):
        if path.name != "kustomization.yaml" and path not in examples:
            assert path.resolve() in used, f"{path} is in no kustomization"
    assert not of_kind(render(KUBERNETES / "base"), "Secret"), "the base references Secrets, never holds them"


# ---- rendering -----------------------------------------------------------------------------------
def test_overlays_render_the_expected_objects(overlay):
    name, documents = overlay
    expected = {("Namespace", NAMESPACE), ("RabbitmqCluster", CLUSTER), ("Cluster", "bazaar-postgres")}
    if name == "local":
        expected.add(("Secret", AUTH_SECRET))
    for service in SERVICES:
        expected |= {(kind, service) for kind in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")}
        expected |= {("User", f"user-{service}"), ("Permission", f"permission-{service}"),
                     ("TopicPermission", f"topic-permission-{service}")}
        if name == "local":
            expected |= {("Secret", f"{service}-amqp"), ("Secret", f"{service}-db")}
    topology_kinds = {"Exchange", "Queue", "Binding"}
    rendered = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert len(rendered) == len(set(rendered)), "an object is defined twice"
    assert {r for r in rendered if r[0] not in topology_kinds} == expected
    assert len(of_kind(documents, "Exchange")) == len(EXCHANGES)
    assert len(of_kind(documents, "Queue")) == len(QUEUES)
    assert len(of_kind(documents, "Binding")) == len(BINDINGS)
    for document in documents:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == NAMESPACE


def test_core_objects_validate_against_kubernetes_schemas(overlay):
    name, documents = overlay
    core = [d for d in documents if d["kind"] in CORE_KINDS]
    assert {d["kind"] for d in core} == CORE_KINDS - ({"Secret"} if name == "production" else set())
    errors = []
    for document in core:
        try:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{document['kind']} {document['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_secret_examples_validate_and_name_every_referenced_key():
    examples = [d for path in KUBERNETES.rglob("secret-example.yaml") for d in load_documents(path)]
    for document in examples:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    provided = {(d["metadata"]["name"], key) for d in examples for key in d["stringData"]}
    assert referenced_secret_keys(render(KUBERNETES / "base")) <= provided


def referenced_secret_keys(documents):
    keys = set()
    for deployment in of_kind(documents, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys.add((ref["name"], ref["key"]))
    for user in of_kind(documents, "User"):
        keys |= {(user["spec"]["importCredentialsSecret"]["name"], k) for k in ("username", "password")}
    for role in named(documents, "Cluster", "bazaar-postgres")["spec"]["managed"]["roles"]:
        keys |= {(role["passwordSecret"]["name"], k) for k in ("username", "password")}
    return keys


def test_local_secrets_are_consistent():
    documents = render(KUBERNETES / "overlays" / "local")
    secrets = {s["metadata"]["name"]: s for s in of_kind(documents, "Secret")}
    for secret_name, key in referenced_secret_keys(documents):
        assert secret_name in secrets and secret_value(secrets[secret_name], key), f"{secret_name}.{key} is missing"
    jwt_secret = secret_value(secrets[AUTH_SECRET], AUTH_SECRET_KEY)
    assert "local" in jwt_secret and len(jwt_secret.encode()) >= MINIMUM_AUTH_SECRET_BYTES, \
        "the services refuse a token secret under 32 bytes"
    roles = {r["name"]: r for r in named(documents, "Cluster", "bazaar-postgres")["spec"]["managed"]["roles"]}
    for service in SERVICES:
        amqp, db = secrets[f"{service}-amqp"], secrets[f"{service}-db"]
        assert "local" in secret_value(amqp, "password") and "local" in secret_value(db, "password")
        url = urlsplit(secret_value(amqp, "url"))
        assert (url.scheme, url.hostname, url.port, url.path) == ("amqp", CLUSTER, 5672, "/%2f")
        assert (url.username, unquote(url.password)) == (secret_value(amqp, "username"), secret_value(amqp, "password"))
        assert url.username == named(documents, "Permission", f"permission-{service}")["spec"]["user"] == service
        url = urlsplit(secret_value(db, "url"))
        assert (url.scheme, url.hostname, url.port, url.path) == ("postgres", "bazaar-postgres-rw", 5432, "/bazaar")
        assert (url.username, unquote(url.password)) == (secret_value(db, "username"), secret_value(db, "password"))
        assert url.username == DB_ROLE[service] and roles[url.username]["passwordSecret"]["name"] == f"{service}-db"
        assert db["type"] == "kubernetes.io/basic-auth"


# ---- the services --------------------------------------------------------------------------------
def test_deployments(overlay):
    name, documents = overlay
    for service in SERVICES:
        deployment = named(documents, "Deployment", service)
        pod = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["terminationGracePeriodSeconds"] > 10, "the drain after SIGTERM takes up to ~10 s"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        (container,) = pod["containers"]
        image = container["image"]
        assert image == (f"bazaar/{service}:1.0.0" if name == "production" else f"bazaar/{service}:latest")

        # Environment: only variables the service reads; the secrets from Secrets.
        config = named(documents, "ConfigMap", service)["data"]
        assert [e["configMapRef"]["name"] for e in container.get("envFrom", [])] == [service]
        env = {e["name"]: e for e in container["env"]}
        names = set(env) | set(config)
        assert len(names) == len(env) + len(config), "a variable is set twice"
        allowed = SERVICE_ENV | (ORDER_ENV if service == "order" else set())
        assert names <= allowed, f"{service}: variables the service doesn't read: {names - allowed}"
        assert REQUIRED_ENV <= SERVICE_ENV and names >= REQUIRED_ENV, f"{service}: missing {REQUIRED_ENV - names}"
        for secret in ("AMQP_URL", "DATABASE_URL"):
            assert "value" not in env[secret] and env[secret]["valueFrom"]["secretKeyRef"]["key"] == "url"
        assert env["AMQP_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{service}-amqp"
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{service}-db"
        assert "value" not in env["AUTH_JWT_SECRET"], "the token secret comes from a Secret"
        assert env["AUTH_JWT_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": AUTH_SECRET, "key": AUTH_SECRET_KEY}}
        assert env["INSTANCE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert config["HTTP_HOST"] == "0.0.0.0" and config["HTTP_PORT"] == str(PORT[service])
        assert config["DATABASE_SCHEMA"] == SCHEMA[service]
        assert config["AMQP_DECLARE_TOPOLOGY"] == "none", "the topology operator owns the broker's topology"
        assert all(isinstance(value, str) for value in config.values())

        # Port, probes, resources, hardening.
        assert container["ports"] == [{"name": "http", "containerPort": PORT[service], "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys()
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]

        # Service, disruption budget, autoscaler: aimed at these pods.
        svc = named(documents, "Service", service)["spec"]
        assert svc["type"] == "ClusterIP" and svc["selector"].items() <= labels.items()
        assert svc["ports"] == [{"name": "http", "port": PORT[service], "targetPort": "http", "protocol": "TCP"}]
        assert named(documents, "PodDisruptionBudget", service)["spec"]["selector"]["matchLabels"].items() <= labels.items()
        hpa = named(documents, "HorizontalPodAutoscaler", service)["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
        assert hpa["metrics"] == [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        assert hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]


def test_base_sizes():
    documents = render(KUBERNETES / "base")
    for service in SERVICES:
        deployment = named(documents, "Deployment", service)
        assert deployment["spec"]["replicas"] == 2
        hpa = named(documents, "HorizontalPodAutoscaler", service)["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
        assert named(documents, "PodDisruptionBudget", service)["spec"] == {
            "minAvailable": 1, "selector": deployment["spec"]["selector"]}
        assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == {
            "requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
    assert named(documents, "RabbitmqCluster", CLUSTER)["spec"]["replicas"] == 3
    assert named(documents, "Cluster", "bazaar-postgres")["spec"]["instances"] == 3


def test_local_overlay_is_single_node():
    documents = render(KUBERNETES / "overlays" / "local")
    for service in SERVICES:
        assert named(documents, "Deployment", service)["spec"]["replicas"] == 1
        assert named(documents, "HorizontalPodAutoscaler", service)["spec"]["minReplicas"] == 1
        assert named(documents, "PodDisruptionBudget", service)["spec"].get("minAvailable") is None, \
            "minAvailable 1 with one replica would block every drain"
        limits = named(documents, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["memory"] != "256Mi", "local resources are smaller than the base's"
    assert named(documents, "RabbitmqCluster", CLUSTER)["spec"]["replicas"] == 1
    assert named(documents, "Cluster", "bazaar-postgres")["spec"]["instances"] == 1


def test_production_overlay_spreads_and_pins():
    documents = render(KUBERNETES / "overlays" / "production")
    for service in SERVICES:
        deployment = named(documents, "Deployment", service)
        assert deployment["spec"]["replicas"] == 3
        assert named(documents, "HorizontalPodAutoscaler", service)["spec"]["minReplicas"] == 3
        pod = deployment["spec"]["template"]["spec"]
        assert not pod["containers"][0]["image"].endswith(":latest")
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in pod["topologySpreadConstraints"]:
            assert constraint["labelSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
            assert "app.kubernetes.io/name" in constraint["matchLabelKeys"], "spread each service's own pods"
    assert named(documents, "RabbitmqCluster", CLUSTER)["spec"]["replicas"] == 3
    assert named(documents, "Cluster", "bazaar-postgres")["spec"]["instances"] == 3


# ---- the operators' objects ----------------------------------------------------------------------
def test_operator_objects_have_their_required_fields(overlay):
    _, documents = overlay
    for document in documents:
        if document["kind"] in CORE_KINDS:
            continue
        assert document["apiVersion"] in ("rabbitmq.com/v1beta1", "postgresql.cnpg.io/v1"), document["kind"]
        assert document["metadata"]["name"] and isinstance(document["spec"], dict)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])

    rabbitmq = named(documents, "RabbitmqCluster", CLUSTER)["spec"]
    assert isinstance(rabbitmq["replicas"], int) and rabbitmq["replicas"] in (1, 3)
    assert rabbitmq["image"].startswith("rabbitmq:") and rabbitmq["persistence"]["storage"]
    assert {"cpu", "memory"} <= rabbitmq["resources"]["requests"].keys() and rabbitmq["resources"]["limits"]["memory"]
    assert "rabbitmq_management" in rabbitmq["rabbitmq"]["additionalPlugins"]
    assert isinstance(rabbitmq["rabbitmq"].get("additionalConfig", ""), str)

    postgres = named(documents, "Cluster", "bazaar-postgres")["spec"]
    assert postgres["instances"] in (1, 3) and postgres["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:15")
    assert postgres["storage"]["size"]
    initdb = postgres["bootstrap"]["initdb"]
    assert (initdb["database"], initdb["owner"]) == ("bazaar", "bazaar")
    sql = [" ".join(statement.split()) for statement in initdb["postInitApplicationSQL"]]
    assert "REVOKE ALL ON DATABASE bazaar FROM PUBLIC" in sql and "REVOKE ALL ON SCHEMA public FROM PUBLIC" in sql
    roles = {r["name"]: r for r in postgres["managed"]["roles"]}
    assert set(roles) == set(DB_ROLE.values())
    for service, role in DB_ROLE.items():
        assert f"CREATE ROLE {role} NOLOGIN" in sql
        assert f"CREATE SCHEMA {SCHEMA[service]} AUTHORIZATION {role}" in sql
        assert roles[role] == {**roles[role], "ensure": "present", "login": True, "passwordSecret": {"name": f"{service}-db"}}
        assert not any(attribute in roles[role] for attribute in ("superuser", "createdb", "createrole", "bypassrls"))
    creates = [s for s in sql if s.startswith(("CREATE ROLE", "CREATE SCHEMA"))]
    assert sql.index(creates[-1]) < min(i for i, s in enumerate(sql) if s.startswith("GRANT"))


def test_topology_objects_reference_the_cluster(overlay):
    _, documents = overlay
    for document in documents:
        if document["apiVersion"] == "rabbitmq.com/v1beta1" and document["kind"] != "RabbitmqCluster":
            assert document["spec"]["rabbitmqClusterReference"] == {"name": CLUSTER}, document["metadata"]["name"]
            if document["kind"] != "User":
                assert document["spec"]["vhost"] == "/"


def test_topology_is_the_contract(overlay):
    _, documents = overlay
    exchanges = [d["spec"] for d in of_kind(documents, "Exchange")]
    assert {(x["name"], x["type"]) for x in exchanges} == EXCHANGES
    assert all(x["durable"] is True and x.get("autoDelete", False) is False for x in exchanges)

    queues = {q["spec"]["name"]: q["spec"] for q in of_kind(documents, "Queue")}
    assert {name: q["arguments"] for name, q in queues.items()} == QUEUES
    assert all(q["type"] == "quorum" and q["durable"] is True and not q.get("autoDelete") for q in queues.values())

    bindings = [b["spec"] for b in of_kind(documents, "Binding")]
    assert all(b["destinationType"] == "queue" for b in bindings)
    assert sorted((b["source"], b["destination"], b["routingKey"]) for b in bindings) == sorted(BINDINGS)

    users = {u["spec"]["importCredentialsSecret"]["name"] for u in of_kind(documents, "User")}
    assert users == {f"{s}-amqp" for s in SERVICES}
    assert all(not u["spec"].get("tags") for u in of_kind(documents, "User")), "service users need no management tags"
    permissions = {p["spec"]["user"]: p["spec"]["permissions"] for p in of_kind(documents, "Permission")}
    assert {u: (p["configure"], p["write"], p["read"]) for u, p in permissions.items()} == PERMISSIONS
    topic = {p["spec"]["user"]: p["spec"]["permissions"] for p in of_kind(documents, "TopicPermission")}
    assert {u: (p["exchange"], p["write"]) for u, p in topic.items()} == TOPIC_PERMISSIONS


def test_permissions_grant_exactly_what_each_service_uses():
    """The contract's regexes, read as RabbitMQ reads them (re.search; anchored by ^ and $)."""
    exchanges, queues = {x for x, _ in EXCHANGES}, set(QUEUES)
    every_key = set().union(*PUBLISHED.values())
    for service, (configure, write, read) in PERMISSIONS.items():
        assert not any(re.search(configure, name) for name in exchanges | queues)
        assert {x for x in exchanges if re.search(write, x)} == {EXCHANGE[service], f"{service}.dlx", f"{service}.retry"}
        # Not even its retry queues (the broker moves messages through them) or its DLQ (operators read those).
        assert {q for q in queues if re.search(read, q)} == {service}
        exchange, topic_write = TOPIC_PERMISSIONS[service]
        assert exchange == EXCHANGE[service]
        assert {key for key in every_key if re.search(topic_write, key)} == PUBLISHED[service]


def test_contract_matches_event_catalogue():
    """docs/event-catalogue.md is generated from the Swift catalogue (a Swift test keeps it current)."""
    catalogue = (ROOT / "docs" / "event-catalogue.md").read_text()
    rows = re.findall(r"^\| (\w+) \| `([\w.]+)` \(quorum\) \| (.*?) \| `([\w.]+)` → `([\w.]+)` \|$", catalogue, re.M)
    assert {row[0] for row in rows} == set(SERVICES), "the catalogue's queue table changed shape"
    documented = set()
    for service, queue, bound, dlx, dlq in rows:
        assert (queue, dlx, dlq) == (service, f"{service}.dlx", f"{service}.dlq")
        documented |= {(x, queue, key) for x, key in re.findall(r"`([\w.]+)` `([\w.]+)`", bound)}
        documented.add((dlx, dlq, dlq))
    assert documented == BINDINGS - RETRY_BINDINGS, "the catalogue lists event and dead-letter bindings, not retries"
    events = re.findall(r"^\| \w+ \| \d+ \| `([\w.]+)` \| `([\w.]+)` \| (\w+) \|", catalogue, re.M)
    assert events, "the catalogue's event table changed shape"
    for exchange, key, producer in events:
        assert exchange == EXCHANGE[producer] and key in PUBLISHED[producer]
    assert {key for _, key, _ in events} == set().union(*PUBLISHED.values())


def test_renderer_agrees_with_kustomize():
    """Where kubectl is installed, its kustomize renders each overlay exactly as the renderer above."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer is not compared with kustomize")
    for name in OVERLAYS:
        output = subprocess.run([kubectl, "kustomize", str(KUBERNETES / "overlays" / name)],
                                capture_output=True, text=True, timeout=120, check=True).stdout
        real = [d for d in yaml.safe_load_all(output) if d]
        for document in real:  # kustomize folds long base64 values over lines
            if document["kind"] == "Secret":
                document["data"] = {k: "".join(v.split()) for k, v in document.get("data", {}).items()}
        key = lambda d: (d["kind"], d["metadata"]["name"])
        assert sorted(real, key=key) == sorted(render(KUBERNETES / "overlays" / name), key=key), name
