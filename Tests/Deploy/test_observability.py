"""The observability profile (Prometheus, Grafana, Jaeger), checked without a Docker engine.

    python3 -m pytest -q Tests/Deploy/test_observability.py      # from the repository's root

- deploy/prometheus/prometheus.yml scrapes exactly the compose services' HTTP ports at /metrics,
  each with its `service` label, and the broker's per-queue metrics from a plugin its image enables;
- deploy/prometheus/kubernetes.yml finds the same pods by the annotations and labels the manifests
  give them (its relabeling is run below on pods made from the manifests);
- every Grafana panel's PromQL is well formed as far as a small tokenizer can tell (balanced
  brackets, known functions, counters only under rate/increase, quantiles over `le`), names only
  the metrics the services export (METRICS below) or the broker's, with their labels, and queries
  the provisioned data source;
- the compose profile mounts files that exist, where Grafana's provisioning looks for them.
Where `promtool` is installed (Debian's `prometheus` package), it checks both Prometheus configs.
Needs PyYAML; no network, no Docker.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_KUBERNETES = ROOT / "deploy" / "prometheus" / "kubernetes.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "bazaar.json"
KUBERNETES_SERVICES = ROOT / "deploy" / "kubernetes" / "base" / "services"
RABBITMQ_DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.template.json"

SERVICES = ["order", "inventory", "payment", "notification"]
PROFILE = "observability"
TOOLS = {"prometheus": 9090, "grafana": 3000, "jaeger": 16686}  # compose service: published UI port
RABBITMQ_PROMETHEUS_PORT = 15692

# ---- the metrics: what the services export (GET /metrics) --------------------------------------
# The names the Swift code registers, with their labels; the lead's end-to-end test checks that
# every `bazaar_*` and `http_server_*` name the dashboard uses appears in a real scrape.
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
HTTP_LABELS = {"http_route", "http_request_method", "http_response_status_code"}
METRICS = {
    "bazaar_messages_consumed_total": (COUNTER, {"event_type", "outcome"}),
    "bazaar_messages_published_total": (COUNTER, {"event_type"}),
    "bazaar_handler_duration_seconds": (HISTOGRAM, {"event_type"}),
    "http_server_request_duration_seconds": (HISTOGRAM, HTTP_LABELS),
    "http_server_requests_total": (COUNTER, HTTP_LABELS),
    "http_server_active_requests": (GAUGE, {"http_request_method"}),
    "bazaar_outbox_backlog": (GAUGE, set()),
    "bazaar_outbox_oldest_pending_age_seconds": (GAUGE, set()),
    "bazaar_inbox_rows": (GAUGE, set()),
    "bazaar_orders_placed_total": (COUNTER, set()),
    "bazaar_orders_completed_total": (COUNTER, {"outcome", "reason"}),
    "bazaar_order_saga_duration_seconds": (HISTOGRAM, {"outcome"}),
    "bazaar_broker_connected": (GAUGE, {"connection"}),
    "bazaar_broker_reconnects_total": (COUNTER, {"connection"}),
    "bazaar_db_pool_connections": (GAUGE, {"state"}),
    "bazaar_db_pool_max_connections": (GAUGE, set()),
    "bazaar_db_pool_waiters": (GAUGE, set()),
}
LABEL_VALUES = {  # the values an equality matcher may ask for
    ("bazaar_messages_consumed_total", "outcome"): {"ok", "duplicate", "retried", "dead_lettered", "requeued"},
    ("bazaar_orders_completed_total", "outcome"): {"confirmed", "cancelled"},
    ("bazaar_order_saga_duration_seconds", "outcome"): {"confirmed", "cancelled"},
    ("bazaar_broker_connected", "connection"): {"publisher", "consumer"},
    ("bazaar_broker_reconnects_total", "connection"): {"publisher", "consumer"},
    ("bazaar_db_pool_connections", "state"): {"in_use", "idle"},
}
# Per schema, and a service's instances share one: aggregate them with max, never sum.
PER_SCHEMA = {"bazaar_outbox_backlog", "bazaar_outbox_oldest_pending_age_seconds", "bazaar_inbox_rows"}
# The broker's: rabbitmq_prometheus's /metrics/detailed with the two queue families we scrape.
RABBITMQ_FAMILIES = {"queue_coarse_metrics", "queue_consumer_count"}
RABBITMQ_METRICS = {
    "rabbitmq_detailed_queue_messages_ready": (GAUGE, {"vhost", "queue"}),
    "rabbitmq_detailed_queue_messages_unacked": (GAUGE, {"vhost", "queue"}),
    "rabbitmq_detailed_queue_messages": (GAUGE, {"vhost", "queue"}),
    "rabbitmq_detailed_queue_consumers": (GAUGE, {"vhost", "queue"}),
}
TARGET_LABELS = {"service", "instance", "job", "namespace"}  # what the scrape configs add


def series():
    """Every series name a query may select: counters and gauges, histograms' three parts."""
    names = {}
    for name, (kind, labels) in {**METRICS, **RABBITMQ_METRICS}.items():
        if kind == HISTOGRAM:
            names[f"{name}_bucket"] = (COUNTER, labels | {"le"}, name)
            names[f"{name}_sum"] = (COUNTER, labels, name)
            names[f"{name}_count"] = (COUNTER, labels, name)
        else:
            names[name] = (kind, labels, name)
    return names


SERIES = series()


# ---- a small PromQL tokenizer ------------------------------------------------------------------
FUNCTIONS = {  # PromQL's functions and aggregations
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc",
    "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
    "last_over_time", "present_over_time",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}
RANGE_FUNCTIONS = COUNTER_FUNCTIONS | {f for f in FUNCTIONS if f.endswith("_over_time")} | {
    "changes", "resets", "delta", "deriv", "idelta", "predict_linear", "holt_winters"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = GROUPING | {"bool", "offset", "and", "or", "unless"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
GRAFANA_RANGES = {"$__rate_interval", "$__interval", "$__range"}
TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<duration>\d+(?:ms|s|m|h|d|w|y))
  | (?P<number>\d+(?:\.\d+)?|\.\d+)
  | (?P<variable>\$\w+)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>,])
  | (?P<bracket>[(){}\[\]])
""", re.X)
CLOSING = {"(": ")", "{": "}", "[": "]"}


def tokens(expr):
    position, found = 0, []
    while position < len(expr):
        match = TOKEN.match(expr, position)
        assert match, f"cannot read {expr[position:]!r} in {expr!r}"
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
        position = match.end()
    return found


def analyse(expr):
    """Walk a query's tokens, asserting what a tokenizer can tell; return what the query uses.

    Returns {"metrics": series selected, "matchers": [(series, label, op, value)], "grouping":
    labels of every by/without clause, "aggregations": [(aggregation, its labels, series inside)]}.
    Selectors must name a metric (`name{…}`), and `sum by (…) (…)` is read as well as `sum(…) by (…)`.
    """
    toks = tokens(expr)
    result = {"metrics": set(), "matchers": [], "grouping": set(), "aggregations": []}
    stack = []  # frames: {"bracket", "kind" (call, grouping, paren, matchers, range), "name", "metrics", "labels"}
    closed = None  # the frame closed by the previous token, if it was a `)` or `}`
    selector = None  # the series whose selector is being read (name, then `{…}`, then `[…]`)

    def enclosing_call():
        return next((frame["name"] for frame in reversed(stack) if frame["kind"] == "call"), None)

    def selector_ends(name, ranged):
        kind = SERIES[name][0]
        if not ranged:
            assert kind != COUNTER, f"counter {name} used without rate()/increase() in {expr!r}"
            return
        function = enclosing_call()
        assert function in RANGE_FUNCTIONS, f"{name}[…] outside a range function in {expr!r}"
        if kind == COUNTER:
            assert function in COUNTER_FUNCTIONS, f"counter {name} under {function}() in {expr!r}"
        else:
            assert function not in COUNTER_FUNCTIONS, f"gauge {name} under {function}() in {expr!r}"

    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1] if i + 1 < len(toks) else (None, None)
        context = stack[-1]["kind"] if stack else None
        just_closed, closed = closed, None

        if kind == "bracket" and text in CLOSING:
            before = toks[i - 1] if i else (None, None)
            frame = {"bracket": text, "name": None, "metrics": set(), "labels": set()}
            if text == "(":
                if before[0] == "ident" and before[1] in GROUPING:
                    frame.update(kind="grouping", name=toks[i - 2][1] if i >= 2 else None)
                elif before[0] == "ident" and before[1] in FUNCTIONS:
                    frame.update(kind="call", name=before[1])
                elif just_closed is not None and just_closed["kind"] == "grouping" and just_closed["name"] in FUNCTIONS:
                    frame.update(kind="call", name=just_closed["name"], labels=set(just_closed["labels"]))
                else:
                    frame.update(kind="paren")
                if frame["name"] == "histogram_quantile" and frame["kind"] == "call":
                    quantile = following
                    assert quantile[0] == "number" and 0 < float(quantile[1]) <= 1, f"histogram_quantile's φ in {expr!r}"
            elif text == "{":
                assert selector is not None and before[0] == "ident", f"a label matcher without a metric in {expr!r}"
                frame.update(kind="matchers", name=selector)
            else:
                assert selector is not None, f"a range without a selector in {expr!r}"
                selector_ends(selector, ranged=True)
                frame.update(kind="range", name=selector)
                selector = None
            stack.append(frame)
            i += 1
            continue

        if kind == "bracket":
            assert stack and CLOSING[stack[-1]["bracket"]] == text, f"unbalanced {text!r} in {expr!r}"
            frame = stack.pop()
            if stack:
                stack[-1]["metrics"] |= frame["metrics"]
                if frame["kind"] != "grouping":
                    stack[-1]["labels"] |= frame["labels"]
            if frame["kind"] == "call" and frame["name"] == "histogram_quantile":
                assert "le" in frame["labels"], f"histogram_quantile over buckets not grouped by le in {expr!r}"
                assert any(m.endswith("_bucket") for m in frame["metrics"]), f"histogram_quantile without _bucket in {expr!r}"
            if frame["kind"] == "call" and frame["name"] in AGGREGATIONS:
                result["aggregations"].append([frame["name"], set(frame["labels"]), set(frame["metrics"])])
            if frame["kind"] == "grouping" and frame["name"] not in FUNCTIONS and result["aggregations"]:
                result["aggregations"][-1][1] |= frame["labels"]  # `sum(…) by (…)`
            if frame["kind"] == "matchers":
                if following != ("bracket", "["):
                    selector_ends(frame["name"], ranged=False)
                    selector = None
            closed = frame
            i += 1
            continue

        if context == "matchers":
            assert kind == "ident" and following[0] == "op" and following[1] in ("=", "!=", "=~", "!~"), \
                f"a label matcher expected at {text!r} in {expr!r}"
            value = toks[i + 2] if i + 2 < len(toks) else (None, None)
            assert value[0] == "string", f"label {text} wants a quoted value in {expr!r}"
            result["matchers"].append((stack[-1]["name"], text, following[1], value[1][1:-1]))
            i += 3
            if i < len(toks) and toks[i] == ("op", ","):
                i += 1
            continue

        if context == "range":
            assert (kind == "variable" and text in GRAFANA_RANGES) or kind == "duration", f"range {text!r} in {expr!r}"
            i += 1
            continue

        if context == "grouping":
            assert kind == "ident" or (kind, text) == ("op", ","), f"a label name expected at {text!r} in {expr!r}"
            if kind == "ident":
                result["grouping"].add(text)
                stack[-1]["labels"].add(text)
            i += 1
            continue

        if kind == "ident":
            if following == ("bracket", "("):
                assert text in FUNCTIONS or text in GROUPING, f"unknown function {text}() in {expr!r}"
            elif text in FUNCTIONS and following in (("ident", "by"), ("ident", "without")):
                pass  # an aggregation whose labels come first
            elif text in KEYWORDS:
                assert text not in GROUPING, f"{text} without its label list in {expr!r}"
            else:
                assert text in SERIES, f"unknown metric {text} in {expr!r}"
                result["metrics"].add(text)
                for frame in stack:
                    frame["metrics"].add(text)
                selector = text
                if following not in (("bracket", "{"), ("bracket", "[")):
                    selector_ends(text, ranged=False)
                    selector = None
            i += 1
            continue

        assert kind in ("number", "op", "string", "duration"), f"unexpected {text!r} in {expr!r}"
        i += 1
    assert not stack, f"unclosed {stack[-1]['bracket']!r} in {expr!r}"
    return result


# ---- helpers -------------------------------------------------------------------------------------
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def prometheus(path=PROMETHEUS):
    return yaml.safe_load(path.read_text())


def job(config, name):
    (found,) = [j for j in config["scrape_configs"] if j["job_name"] == name]
    return found


def dashboard():
    return json.loads(DASHBOARD.read_text())


def panels():
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries():
    return [(panel, target) for panel in panels() for target in panel["targets"]]


def provisioned(kind):
    directory = GRAFANA / "provisioning" / kind
    return [yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.y*ml"))]


def datasources():
    return {source["uid"]: source for document in provisioned("datasources") for source in document["datasources"]}


def bind_mounts(service):
    """(host path, container path, read-only) for each bind mount of a compose service."""
    mounts = []
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if parts[0].startswith("."):
            mounts.append((ROOT / parts[0], parts[1], parts[2:] == ["ro"]))
    return mounts


def pod_templates():
    templates = {}
    for service in SERVICES:
        documents = list(yaml.safe_load_all((KUBERNETES_SERVICES / f"{service}.yaml").read_text()))
        (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
        templates[service] = deployment["spec"]["template"]
    return templates


def relabel(labels, configs):
    """Prometheus's relabeling (replace, keep, drop), enough for our configs; None when dropped."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        value = config.get("separator", ";").join(labels.get(name, "") for name in config.get("source_labels", []))
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        if action == "keep" and not match or action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", lambda m: match.group(int(m.group(1))) or "", config.get("replacement", "$1"))
            labels[config["target_label"]] = replacement
        assert action in ("replace", "keep", "drop"), action
    return {name: value for name, value in labels.items() if value != ""}


# ---- Prometheus in compose -------------------------------------------------------------------------
def test_prometheus_scrapes_exactly_the_compose_services_at_their_http_ports():
    config = prometheus()
    assert config["global"]["scrape_interval"] == "15s"
    services = compose()["services"]
    bazaar = job(config, "bazaar")
    assert bazaar.get("metrics_path", "/metrics") == "/metrics"
    targets = {target: group.get("labels", {}) for group in bazaar["static_configs"] for target in group["targets"]}
    expected = {f"{name}:{services[name]['environment']['HTTP_PORT']}": name for name in SERVICES}
    assert set(targets) == set(expected)
    for target, name in expected.items():
        assert targets[target] == {"service": name}, "our metrics carry no service label: the scrape adds it"
        # The port the service listens on is the one its healthcheck asks.
        assert f"127.0.0.1:{target.split(':')[1]}/" in " ".join(services[name]["healthcheck"]["test"])


def test_prometheus_scrapes_the_brokers_per_queue_metrics_from_a_plugin_its_image_enables():
    config = prometheus()
    rabbitmq = job(config, "rabbitmq")
    (group,) = rabbitmq["static_configs"]
    assert group["targets"] == [f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}"]
    # /metrics aggregates all queues into one series; /metrics/detailed has them per queue, with
    # the `rabbitmq_detailed_` prefix the dashboard uses.
    assert rabbitmq["metrics_path"] == "/metrics/detailed"
    assert set(rabbitmq["params"]["family"]) == RABBITMQ_FAMILIES
    broker = compose()["services"]["rabbitmq"]
    # The official images enable rabbitmq_prometheus (`rabbitmq-plugins enable --offline` in the
    # 3.13 Dockerfile): nothing of ours may replace their enabled_plugins or move the port.
    assert re.fullmatch(r"rabbitmq:3\.13(\.\d+)?-management", broker["image"])
    assert not any(target.startswith("/etc/rabbitmq/enabled_plugins") for _, target, _ in bind_mounts(broker))
    assert "prometheus.tcp.port" not in (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()


def test_every_prometheus_target_is_a_compose_service():
    names = set(compose()["services"])
    for scrape in prometheus()["scrape_configs"]:
        for group in scrape["static_configs"]:
            for target in group["targets"]:
                assert target.split(":")[0] in names, target


# ---- Prometheus in Kubernetes ----------------------------------------------------------------------
def test_kubernetes_pods_carry_the_scrape_annotations_for_their_http_port():
    for service, template in pod_templates().items():
        (container,) = template["spec"]["containers"]
        (port,) = [p for p in container["ports"] if p["name"] == "http"]
        annotations = template["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port["containerPort"]),
                               "prometheus.io/path": "/metrics"}, service


def test_kubernetes_scrape_config_finds_the_services_pods_with_their_service_label():
    config = prometheus(PROMETHEUS_KUBERNETES)
    assert config["global"]["scrape_interval"] == prometheus()["global"]["scrape_interval"]
    bazaar = job(config, "bazaar")
    for service, template in pod_templates().items():
        (container,) = template["spec"]["containers"]
        meta = {"__address__": f"10.1.2.3:{container['ports'][0]['containerPort']}", "__metrics_path__": "/metrics",
                "__meta_kubernetes_pod_name": f"{service}-7d9c-x2x4q", "__meta_kubernetes_namespace": "bazaar",
                "__meta_kubernetes_pod_container_port_name": "http"}
        for key, value in template["metadata"]["labels"].items():
            meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
        for key, value in template["metadata"]["annotations"].items():
            meta["__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
        target = relabel(meta, bazaar["relabel_configs"])
        assert target is not None, f"{service}'s pods are not scraped"
        port = template["metadata"]["annotations"]["prometheus.io/port"]
        assert target["__address__"] == f"10.1.2.3:{port}" and target["__metrics_path__"] == "/metrics"
        assert target["service"] == service and target["instance"] == meta["__meta_kubernetes_pod_name"]
        # Without the opt-in annotation, no scrape.
        unannotated = {k: v for k, v in meta.items() if "annotation" not in k}
        assert relabel(unannotated, bazaar["relabel_configs"]) is None


def test_kubernetes_scrape_config_finds_the_broker_nodes():
    config = prometheus(PROMETHEUS_KUBERNETES)
    rabbitmq, compose_rabbitmq = job(config, "rabbitmq"), job(prometheus(), "rabbitmq")
    assert rabbitmq["metrics_path"] == compose_rabbitmq["metrics_path"] and rabbitmq["params"] == compose_rabbitmq["params"]
    cluster = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "base" / "rabbitmq" / "cluster.yaml").read_text())
    node = {"__address__": f"10.1.2.9:{RABBITMQ_PROMETHEUS_PORT}", "__meta_kubernetes_pod_name": "bazaar-rabbitmq-server-0",
            # The Cluster Operator names its pods' app.kubernetes.io/name after the cluster, and
            # the plugin's container port `prometheus`.
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": cluster["metadata"]["name"],
            "__meta_kubernetes_pod_container_port_name": "prometheus"}
    target = relabel(node, rabbitmq["relabel_configs"])
    assert target and target["__address__"] == node["__address__"] and target["service"] == "rabbitmq"
    amqp_port = {**node, "__address__": "10.1.2.9:5672", "__meta_kubernetes_pod_container_port_name": "amqp"}
    assert relabel(amqp_port, rabbitmq["relabel_configs"]) is None


@pytest.mark.parametrize("path", [PROMETHEUS, PROMETHEUS_KUBERNETES], ids=lambda p: p.name)
def test_promtool_accepts_the_prometheus_configs(path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: the prometheus package): the configs are checked by the tests above only")
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Grafana -----------------------------------------------------------------------------------
def test_dashboard_is_provisioned_where_compose_mounts_it():
    grafana = compose()["services"]["grafana"]
    mounts = {target: (host, read_only) for host, target, read_only in bind_mounts(grafana)}
    (provider,) = [p for document in provisioned("dashboards") for p in document["providers"]]
    path = provider["options"]["path"]
    assert mounts[path] == (DASHBOARD.parent, True), "the provider reads the directory compose mounts there"
    assert mounts["/etc/grafana/provisioning/dashboards"] == (GRAFANA / "provisioning" / "dashboards", True)
    assert mounts["/etc/grafana/provisioning/datasources"] == (GRAFANA / "provisioning" / "datasources", True)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{DASHBOARD.name}"


def test_datasources_point_at_the_compose_services():
    sources = datasources()
    services = compose()["services"]
    assert sources["prometheus"]["type"] == "prometheus" and sources["prometheus"]["isDefault"] is True
    assert sources["prometheus"]["url"] == f"http://prometheus:{TOOLS['prometheus']}"
    assert sources["prometheus"]["jsonData"]["timeInterval"] == prometheus()["global"]["scrape_interval"]
    assert sources["jaeger"]["type"] == "jaeger" and sources["jaeger"]["url"] == f"http://jaeger:{TOOLS['jaeger']}"
    for source in sources.values():
        assert source["url"].split("//")[1].split(":")[0] in services


def test_dashboard_shape():
    board = dashboard()
    assert board["uid"] == "bazaar" and board["schemaVersion"] >= 38
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in panels():
        assert panel["title"] and panel["description"] and panel["targets"], panel.get("title")
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_every_panel_queries_the_provisioned_prometheus():
    sources = datasources()
    for panel, target in queries():
        for source in (panel["datasource"], target["datasource"]):
            assert source["uid"] in sources and sources[source["uid"]]["type"] == source["type"] == "prometheus", panel["title"]


def test_every_query_is_well_formed_and_names_only_exported_metrics():
    for panel, target in queries():
        found = analyse(target["expr"])
        assert found["metrics"], f"{panel['title']}: {target['expr']} selects nothing"
        labels = TARGET_LABELS | {"le"} | set().union(*(SERIES[m][1] for m in found["metrics"]))
        assert found["grouping"] <= labels, f"{panel['title']}: grouped by {found['grouping'] - labels}, which no series has"
        for metric, label, op, value in found["matchers"]:
            assert label in SERIES[metric][1] | TARGET_LABELS, f"{panel['title']}: {metric} has no label {label}"
            if op == "=" and (SERIES[metric][2], label) in LABEL_VALUES:
                assert value in LABEL_VALUES[(SERIES[metric][2], label)], f"{panel['title']}: {label}={value!r}"
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend <= found["grouping"], f"{panel['title']}: the legend names {legend - found['grouping']}, aggregated away"


def test_tokenizer_rejects_what_it_should():
    for bad in [
        "sum(rate(bazaar_orders_placed_total[$__rate_interval])",  # unbalanced
        "sum(bazaar_orders_placed_total)",  # a counter without rate
        "rate(bazaar_outbox_backlog[5m])",  # a gauge under rate
        "summ(rate(bazaar_orders_placed_total[5m]))",  # unknown function
        "sum(rate(bazaar_orders_placed[5m]))",  # unknown metric
        "histogram_quantile(0.99, sum by (service) (rate(bazaar_handler_duration_seconds_bucket[5m])))",  # no le
        "histogram_quantile(99, sum by (le) (rate(bazaar_handler_duration_seconds_bucket[5m])))",  # φ > 1
        "sum(rate(bazaar_orders_placed_total[$interval]))",  # not a Grafana range variable
        "sum(rate(bazaar_orders_placed_total{outcome=confirmed}[5m]))",  # an unquoted value
        "sum(rate(bazaar_orders_placed_total[5m])) by",  # a grouping without labels
        "max_over_time(bazaar_orders_placed_total[5m])",  # a counter under a gauge's function
        "sum(rate(bazaar_handler_duration_seconds[5m]))",  # a histogram is read through its parts
    ]:
        with pytest.raises(AssertionError):
            analyse(bad)


def test_per_schema_gauges_are_aggregated_with_max():
    for panel, target in queries():
        found = analyse(target["expr"])
        for function, grouping, metrics in found["aggregations"]:
            if metrics & PER_SCHEMA:
                assert function == "max" and "service" in grouping, f"{panel['title']}: {target['expr']}"


def test_rabbitmq_queue_matchers_match_queues_the_broker_has():
    definitions = json.loads(RABBITMQ_DEFINITIONS.read_text())
    queues = {queue["name"] for queue in definitions["queues"]}
    dead_letter = {q for q in queues if q.endswith(".dlq")}
    assert dead_letter == {f"{s}.dlq" for s in SERVICES}
    for panel, target in queries():
        for metric, label, op, value in analyse(target["expr"])["matchers"]:
            if label == "queue":
                matched = {q for q in queues if (re.fullmatch(value, q) if "~" in op else value == q)}
                matched = queues - matched if op.startswith("!") else matched
                assert matched, f"{panel['title']}: queue{op}{value!r} matches no queue"
                if "dlq" in value:  # dead-letter queues: all four, or (negated) none of them
                    assert matched == dead_letter if op == "=~" else not matched & dead_letter, f"{panel['title']}: {value!r}"


def test_the_dashboard_shows_what_the_issue_asks():
    exprs = [target["expr"] for _, target in queries()]
    used = set().union(*(analyse(e)["metrics"] for e in exprs))
    # Every metric the services export has a panel (histograms through their buckets).
    assert {SERIES[m][2] for m in used} >= set(METRICS), f"no panel for {set(METRICS) - {SERIES[m][2] for m in used}}"
    joined = "\n".join(exprs)
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(bazaar_order_saga_duration_seconds_bucket" in joined
    assert 'sum by (reason) (rate(bazaar_orders_completed_total{outcome="cancelled"}' in joined
    assert 'rate(bazaar_messages_consumed_total{outcome="dead_lettered"}' in joined
    assert any("rabbitmq_detailed_queue_messages_ready" in e for e in exprs), "queue depth"
    assert any("rabbitmq_detailed_queue_messages{" in e and "dlq" in e for e in exprs), "dead-letter queue depth"
    assert any("sum by (service, outcome) (rate(bazaar_messages_consumed_total[" in e for e in exprs)


# ---- the compose profile ---------------------------------------------------------------------------
def test_the_tools_run_only_with_the_observability_profile():
    services = compose()["services"]
    for name, service in services.items():
        if name in TOOLS:
            assert service["profiles"] == [PROFILE], name
        else:
            assert "profiles" not in service, f"{name} must start with a plain `docker compose up`"


def test_the_tools_mount_files_that_exist_read_only_and_publish_on_localhost():
    services = compose()["services"]
    for name, port in TOOLS.items():
        for host, target, read_only in bind_mounts(services[name]):
            assert host.exists(), f"{name} mounts {host}, which doesn't exist"
            assert read_only, f"{name} mounts {host} writable"
        assert f"127.0.0.1:{port}:{port}" in services[name]["ports"], name
    prometheus_mounts = {target: host for host, target, _ in bind_mounts(services["prometheus"])}
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS, "the image's default config path"


def test_services_send_traces_to_jaeger_only_when_asked():
    services = compose()["services"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"  # OTLP/HTTP on 4318
    for name in SERVICES:
        environment = services[name]["environment"]
        # No value: passed on from the shell or .env when set there, absent otherwise (tracing off).
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in environment and environment["OTEL_EXPORTER_OTLP_ENDPOINT"] is None
        assert environment["OTEL_SERVICE_NAME"] == name
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318 docker compose --profile observability up" in COMPOSE.read_text()
