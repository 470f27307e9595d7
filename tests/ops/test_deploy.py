"""deploy/: the Helm chart (helm lint, helm template | kubeconform), the compose file (Compose spec schema), nginx
and the systemd unit (systemd-analyze verify)."""

import hashlib
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.ops import k8s_schemas

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "gcl"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
KUBECONFORM = TOOLS / "bin" / "kubeconform"
SCHEMAS = TOOLS / "k8s-schemas"
KUBE_VERSION = k8s_schemas.KUBERNETES_VERSION
MINIMAL = ["--set", "database.url=postgresql://gcl:secret@postgres:5432/gcl"]
FULL = ["-f", str(CHART / "ci" / "full-values.yaml")]


def _tool(path):
    if not path.exists():
        pytest.skip(f"{path.name} is not installed: `make ops-tools` builds it (make test does)")
    return str(path)


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def _template(values):
    done = _run([_tool(HELM), "template", "gcl", str(CHART), "--kube-version", KUBE_VERSION, *values])
    assert done.returncode == 0, done.stderr
    return done.stdout


def _kubeconform(manifests):
    if not (SCHEMAS / f"v{KUBE_VERSION}-standalone-strict").is_dir():
        pytest.skip("Kubernetes schemas are not written: `make ops-tools` writes them (make test does)")
    location = str(SCHEMAS) + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/"
    location += "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    args = [_tool(KUBECONFORM), "-strict", "-summary", "-kubernetes-version", KUBE_VERSION]
    # ServiceMonitor is a Prometheus Operator CRD: no schema ships with Kubernetes (checked by hand below).
    args += ["-schema-location", location, "-skip", "ServiceMonitor", "-"]
    return _run(args, input=manifests)


@pytest.mark.parametrize("values", [MINIMAL, FULL], ids=["minimal", "full"])
def test_helm_lint(values):
    done = _run([_tool(HELM), "lint", "--strict", str(CHART), *values])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", [MINIMAL, FULL], ids=["minimal", "full"])
def test_helm_template_is_valid_kubernetes(values):
    done = _kubeconform(_template(values))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Invalid: 0, Errors: 0" in done.stdout


def test_kubeconform_catches_a_broken_manifest():
    """The schemas really are applied (a typo and a wrong type fail), so the check above means something."""
    broken = (
        _template(MINIMAL)
        .replace("minAvailable:", "minAvailible:")
        .replace("containerPort: 4280", 'containerPort: "x"')
    )
    done = _kubeconform(broken)
    assert done.returncode == 1
    assert "minAvailible" in done.stdout and "containerPort" in done.stdout


def _objects(values):
    return {doc["kind"]: doc for doc in yaml.safe_load_all(_template(values)) if doc}


def test_chart_objects():
    objects = _objects(FULL)
    assert set(objects) == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["gcl-server", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    env_from = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert env_from == {objects["ConfigMap"]["metadata"]["name"], objects["Secret"]["metadata"]["name"]}
    assert set(objects["Secret"]["stringData"]) == {"DATABASE_URL", "GCL_API_KEYS"}
    assert not {"DATABASE_URL", "GCL_API_KEYS"} & set(objects["ConfigMap"]["data"])  # secrets stay in the Secret
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["authorization"]["credentials"] == {"name": "gcl-metrics", "key": "token"}
    assert "ServiceMonitor" not in _objects(MINIMAL)


def test_chart_requires_a_database():
    done = _run([_tool(HELM), "template", "gcl", str(CHART), "--kube-version", KUBE_VERSION])
    assert done.returncode != 0 and "database.url" in done.stderr
    objects = _objects(["--set", "existingSecret=gcl-prod"])
    assert "Secret" not in objects
    assert {"secretRef": {"name": "gcl-prod"}} in objects["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "envFrom"
    ]


def test_compose_file_follows_the_compose_specification():
    schema_path = Path(__file__).parent / "schemas" / "compose-spec.json"
    checksum = (schema_path.parent / "compose-spec.json.sha256").read_text().strip()
    assert hashlib.sha256(schema_path.read_bytes()).hexdigest() == checksum
    schema = json.loads(schema_path.read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject what compose would reject
        jsonschema.Draft7Validator(schema).validate(
            {**compose, "services": {"x": {"restart": "sometimes", "bogus": 1}}}
        )
    services = compose["services"]
    nodes = [name for name in services if name.startswith("gcl-")]
    assert len(nodes) == 2
    for name in nodes:
        node = services[name]
        assert node["build"]["dockerfile"] == "deploy/Dockerfile"
        assert node["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["healthcheck"]["test"]
    assert set(services["nginx"]["depends_on"]) == set(nodes)


def test_nginx_balances_both_nodes_round_robin():
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream gcl \{(.*?)\}", conf, re.S).group(1)
    assert re.findall(r"server (gcl-\d):4280", upstream) == ["gcl-1", "gcl-2"]
    assert not re.search(r"\b(ip_hash|hash|least_conn|sticky)\b", upstream)  # round robin, no stickiness
    retry = re.search(r"proxy_next_upstream ([^;]*);", conf).group(1)
    assert "http_5" not in retry and "non_idempotent" not in retry  # a retried POST could acquire twice
    assert int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1)) >= 60  # server-side waits last 30 s


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = (DEPLOY / "systemd" / "gcl-server.service").read_text()
    assert "ExecStart=/opt/gcl/venv/bin/gcl-server serve" in unit
    # verify checks that the executables exist: point the unit at this checkout's installed gcl-server.
    venv = Path(shutil.which("gcl-server", path=str(ROOT / ".venv" / "bin"))).parent.parent
    path = tmp_path / "gcl-server.service"
    path.write_text(unit.replace("/opt/gcl/venv", str(venv)))
    done = _run([analyze, "verify", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    path.write_text(unit.replace("/opt/gcl/venv", str(tmp_path / "nowhere")).replace("KillMode=mixed", "KillMode=x"))
    assert _run([analyze, "verify", str(path)]).returncode != 0


def test_chart_values_are_checked_by_its_schema():
    done = _run(
        [
            _tool(HELM),
            "template",
            "gcl",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "database.url=sqlite:///x",
        ]
    )
    assert done.returncode != 0 and "/database/url" in done.stderr  # several nodes on one SQLite file would corrupt it
    done = _run(
        [_tool(HELM), "template", "gcl", str(CHART), "--kube-version", KUBE_VERSION, *MINIMAL, "--set", "config.X=1"]
    )
    assert done.returncode != 0  # the ConfigMap takes GCL_* settings only (secrets go to the Secret)


def test_versions_agree():
    """Each package's version lives in its pyproject.toml; the chart's appVersion and the CHANGELOG follow it."""
    versions = {
        tomllib.loads((ROOT / p / "pyproject.toml").read_text())["project"]["version"] for p in ("api", "sdk-python")
    }
    (version,) = versions  # released together
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == version
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()
