"""deploy/: Prometheus config and alert rules (promtool), the Grafana dashboard, docker-compose, the
Dockerfile's health check, the systemd unit and the Kubernetes manifests, checked against the code."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reidd.config import load_config, parse_config
from reidd.telemetry import Metrics, MetricsServer

from support import ROOT, free_port


DEPLOY = ROOT / "deploy"


PROM = DEPLOY / "prometheus"


STANDARD = {"up"}  # synthesised by Prometheus for every target


PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and",
    "or", "unless", "bool", "offset", "rate", "irate", "increase", "deriv", "delta", "histogram_quantile", "time",
    "vector", "le", "avg_over_time", "max_over_time", "min_over_time", "label_values", "topk", "bottomk", "abs",
    "clamp_min", "clamp_max", "humanize", "instance", "job",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is needed (apt install prometheus)"
    return path


def _known_metrics() -> dict[str, set[str]]:
    """Sample names a live Metrics() exposes (with _total/_bucket/... suffixes) -> their label names."""
    m = Metrics()
    labels = {c._name: set(c._labelnames) for c in vars(m).values() if hasattr(c, "_labelnames")}
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "gauge": [""], "summary": ["_sum", "_count"]}
    known: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for suf in suffixes.get(fam.type, [""]):
            base = labels.get(fam.name, labels.get(fam.name + "_total", set()))
            known[fam.name + suf] = base | ({"le"} if suf == "_bucket" else set())
        for s in fam.samples:
            known.setdefault(s.name, set(s.labels))
    return known


def _dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana/dashboards/reidd.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    return exprs


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _check_metrics(expr: str, known: dict[str, set[str]], where: str) -> set[str]:
    """Every metric an expression names exists (and its label matchers use its labels); returns the names."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    used: set[str] = set()
    for name in re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\b(?!\s*\()", re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", no_strings)):
        if name in PROMQL_WORDS or name.startswith("__") or name.isdigit():
            continue
        if not (name.startswith("reidd_") or name.startswith("process_") or name in STANDARD):
            continue
        assert name in known or name in STANDARD, f"{where}: metric {name} is not exposed by reidd.telemetry"
        used.add(name)
    for name, selector in re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}", expr):
        if name in known:
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
                assert label in known[name] | {"instance", "job"}, f"{where}: {name} has no label '{label}'"
    return used


# --------------------------------------------------------------------------- Prometheus
def test_promtool_validates_config_rules_and_rule_unit_tests() -> None:
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        res = subprocess.run([_promtool(), *args], cwd=PROM, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        assert "SUCCESS" in res.stdout + res.stderr


def test_alerts_cover_the_failure_modes_and_use_real_metrics() -> None:
    known = _known_metrics()
    rules = {r["alert"]: r for r in _alert_rules()}
    used = set()
    for name, rule in rules.items():
        used |= _check_metrics(rule["expr"], known, f"alert {name}")
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    for metric in ("reidd_source_state", "reidd_frames_processed_total", "reidd_event_spool_depth", "reidd_redis_up",
                   "reidd_matches_total", "reidd_tracklets_closed_total"):
        assert metric in used, f"no alert watches {metric}"
    # each alert is explained for operators
    ops = (ROOT / "docs/operations.md").read_text()
    for name in rules:
        assert name in ops, f"docs/operations.md does not explain {name}"


def test_prometheus_scrapes_the_metrics_port_of_the_compose_config() -> None:
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "reidd")
    cfg = load_config(DEPLOY / "cameras.compose.yaml")
    assert job["static_configs"][0]["targets"] == [f"reidd:{cfg.metrics.port}"]
    assert prom["rule_files"] == ["alerts.yml"]


# --------------------------------------------------------------------------- Grafana
def test_dashboard_references_only_real_metrics_and_valid_promql(tmp_path: Path) -> None:
    known = _known_metrics()
    exprs = _dashboard_exprs()
    used = set()
    for i, e in enumerate(exprs):
        used |= _check_metrics(e, known, f"dashboard expr {i}")
    # the panels the operators need are there
    for metric in ("reidd_frames_processed_total", "reidd_source_state", "reidd_detector_latency_seconds_bucket",
                   "reidd_embedder_latency_seconds_bucket", "reidd_detector_batch_size_sum",
                   "reidd_embedder_batch_size_sum", "reidd_active_tracks", "reidd_tracklets_closed_total",
                   "reidd_matches_total", "reidd_match_similarity_bucket", "reidd_gallery_entries",
                   "reidd_event_spool_depth", "process_resident_memory_bytes", "reidd_gpu_memory_bytes"):
        assert metric in used, f"the dashboard shows no {metric}"
    # PromQL syntax: every panel query (Grafana variables substituted) as a recording rule for promtool
    subst = {"$__rate_interval": "1m", "$instance": ".*", "$camera": ".*"}
    rules = []
    for i, e in enumerate(exprs):
        if e.startswith("label_values("):
            continue
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, e
        rules.append({"record": f"dashboard:expr_{i}", "expr": e})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboard_structure_and_provisioning() -> None:
    dash = json.loads((DEPLOY / "grafana/dashboards/reidd.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == ds["uid"], p["title"]
            assert p["targets"] and all(t["datasource"]["uid"] == ds["uid"] for t in p["targets"]), p["title"]
    types = {p["type"] for p in dash["panels"]}
    assert {"heatmap", "timeseries", "stat", "state-timeline"} <= types
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/reidd.yml").read_text())["providers"][0]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{prov['options']['path']}:ro" in mounts


# --------------------------------------------------------------------------- docker-compose and Dockerfile
def test_compose_services_volumes_and_config() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"reidd", "redis", "prometheus", "grafana"}
    assert set(compose["volumes"]) == {"reidd-state", "redis-data", "prometheus-data", "grafana-data"}
    for svc in services.values():  # every bind-mounted file or folder exists next to the compose file
        for vol in svc.get("volumes", []):
            host = vol.split(":", 1)[0]
            if host.startswith("./"):
                assert (DEPLOY / host).exists(), host
            else:
                assert host in compose["volumes"], host
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert services["reidd"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "./cameras.compose.yaml:/etc/reidd/cameras.yaml:ro" in services["reidd"]["volumes"]
    assert services["reidd"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]
    cfg = load_config(DEPLOY / "cameras.compose.yaml")
    assert cfg.gallery.redis_url == "redis://redis:6379/0"
    assert (cfg.metrics.host, cfg.metrics.enabled) == ("0.0.0.0", True)
    assert f"{cfg.metrics.port}:{cfg.metrics.port}" in services["reidd"]["ports"]
    for d in (cfg.events.spool_dir, cfg.events.crops_dir, cfg.gallery.state_dir):  # writable state volume
        assert d.startswith("/var/lib/reidd/"), d


def _dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerfile_shape() -> None:
    ins = _dockerfile()
    get = lambda k: [v for i, v in ins if i == k]  # noqa: E731
    assert re.match(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu2[24]\.04$", get("FROM")[0])
    user = get("USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    cfg = load_config(DEPLOY / "cameras.compose.yaml")
    assert get("EXPOSE") == [str(cfg.metrics.port)]
    entry = json.loads(get("ENTRYPOINT")[0])
    assert entry[-4:] == ["reidd", "run", "--config", "/etc/reidd/cameras.yaml"]
    assert any("pip install" in v for v in get("RUN"))
    assert "/healthz" in get("HEALTHCHECK")[0]
    # the base's Python is new enough: Ubuntu 24.04 ships 3.12
    assert "ubuntu24.04" in get("FROM")[0]


def test_dockerfile_healthcheck_command_against_the_real_endpoint() -> None:
    hc = next(v for i, v in _dockerfile() if i == "HEALTHCHECK")
    cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"]
    server = MetricsServer(Metrics(), "127.0.0.1", 0).start()
    env = {**os.environ, "REIDD_METRICS_PORT": str(server.port)}
    try:
        assert subprocess.run([sys.executable, "-c", cmd[2]], env=env, capture_output=True, timeout=30).returncode == 0
    finally:
        server.stop()
    assert subprocess.run([sys.executable, "-c", cmd[2]], env=env, capture_output=True, timeout=30).returncode != 0
    assert ("ENV", "REIDD_METRICS_PORT=9108") in _dockerfile()  # the image default matches EXPOSE


def test_health_and_readiness_endpoints_the_probes_use() -> None:
    state = {"ready": False}
    server = MetricsServer(Metrics(), "127.0.0.1", 0,
                           readiness=lambda: (state["ready"], {"redis": state["ready"]})).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz", timeout=5)
        assert err.value.code == 503 and json.loads(err.value.read())["redis"] is False
        state["ready"] = True
        with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read())["ready"] is True
    finally:
        server.stop()


# --------------------------------------------------------------------------- systemd
def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive
    unit.read(DEPLOY / "systemd/reidd.service")
    svc = unit["Service"]
    assert svc["User"] not in ("root", "0") and svc["Restart"] == "on-failure"
    assert svc["KillSignal"] == "SIGTERM" and int(svc["TimeoutStopSec"]) >= 60
    assert shlex.split(svc["ExecStart"])[1:] == ["run", "--config", "/etc/reidd/cameras.yaml"]
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert svc[key] in ("true", "strict"), key
    assert svc["ReadWritePaths"] == "/var/lib/reidd"
    assert "StartLimitBurst" in unit["Unit"] and unit["Install"]["WantedBy"] == "multi-user.target"


# --------------------------------------------------------------------------- Kubernetes
def _k8s() -> dict[tuple[str, str], dict]:
    docs = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                assert {"apiVersion", "kind", "metadata"} <= set(d), f
                docs[(d["kind"], d["metadata"]["name"])] = d
    return docs


def test_k8s_manifests_parse_and_fit_together(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s()
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (DEPLOY / "k8s" / res).is_file(), res
    sts = docs[("StatefulSet", "reidd")]
    redis_sts = docs[("StatefulSet", "redis")]
    assert ("Service", "redis") in docs and ("Service", "reidd") in docs and ("Namespace", "reidd") in docs
    assert sts["spec"]["serviceName"] == "reidd" and redis_sts["spec"]["serviceName"] == "redis"
    assert redis_sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pod = sts["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    secret_names = {d["metadata"]["name"] for (k, _), d in docs.items() if k == "Secret"}
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    refs |= {e["secretRef"]["name"] for e in c.get("envFrom", [])}
    assert refs <= secret_names
    # one shard config per replica; each camera enabled in exactly one shard; every shard is a valid config
    cm = docs[("ConfigMap", "reidd-shards")]
    shards = sorted(cm["data"])
    assert shards == [f"shard-{i}.yaml" for i in range(sts["spec"]["replicas"])]
    for var in ("REDIS_PASSWORD", "CAM_USER", "CAM_PASS"):
        monkeypatch.setenv(var, "x")
    owner: dict[str, list[str]] = {}
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    for name in shards:
        cfg = parse_config(yaml.safe_load(cm["data"][name]), name, "/etc/reidd/shards")
        assert cfg.gallery.redis_url == "redis://:x@redis:6379/0" and cfg.metrics.host == "0.0.0.0"
        assert cfg.metrics.port == port == int(pod["metadata"]["annotations"]["prometheus.io/port"])
        for cam in cfg.enabled_cameras:
            owner.setdefault(cam.id, []).append(name)
    all_cams = {cam["id"] for cam in yaml.safe_load(cm["data"][shards[0]])["cameras"]}
    assert set(owner) == all_cams and all(len(v) == 1 for v in owner.values()), owner


def test_k8s_pod_picks_its_shard_from_the_ordinal(tmp_path: Path) -> None:
    c = _k8s()[("StatefulSet", "reidd")]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-2:] == ["/bin/sh", "-c"]
    fake = tmp_path / "bin" / "reidd"  # stands in for the entry point: prints the arguments it got
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    for host, shard in (("reidd-0", 0), ("reidd-12", 12)):
        env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOSTNAME": host}
        out = subprocess.run(["/bin/sh", "-c", *c["args"]], env=env, capture_output=True, text=True, timeout=10)
        assert out.stdout.split() == ["run", "--config", f"/etc/reidd/shards/shard-{shard}.yaml"]


def test_k8s_redis_command_requires_the_password(tmp_path: Path) -> None:
    c = _k8s()[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]
    script = c["args"][0]
    assert "--dir /data" in script and "--appendonly yes" in script
    port = free_port()
    script = script.replace("--dir /data", f"--dir {tmp_path} --port {port} --bind 127.0.0.1 --save ''")
    env = {**os.environ, "REDIS_PASSWORD": "pw-for-test"}
    proc = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password="pw-for-test", socket_timeout=1)
        deadline = time.time() + 10
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert time.time() < deadline, "redis did not start"
                time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=1).ping()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert proc.pid == int(client.info("server")["process_id"])  # exec: redis-server is the shell's pid
    finally:
        proc.terminate()
        proc.wait(10)
