"""The deployment files hold together: every file parses; stop timeouts outlast the daemon's
longest graceful shutdown; probes, ports and scrape targets point at what the app serves; the
Kubernetes manifests render (with kubectl's kustomize, where installed); and the image's
entrypoint works when run as a plain process with the environment the image sets.

No container runtime or cluster runs here: what is exercised is said in deploy/README.md."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from blackboard.daemon import longest_shutdown
from blackboard.metrics import Metrics
from tests.conftest import unique_board

DEPLOY = Path(__file__).parent.parent / "deploy"
K8S = DEPLOY / "k8s"
GRACE = 30.0  # BLACKBOARD_GRACE in every deployment file (checked below)


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def k8s(kind: str) -> dict[str, Any]:
    docs = [
        d
        for p in K8S.glob("*.yaml")
        if p.name != "kustomization.yaml"
        for d in yaml.safe_load_all(p.read_text())
    ]
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage (KEY=VALUE pairs, shell-quoted)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_json(instruction: str) -> list[str]:
    """The exec-form (JSON) arguments of an instruction; for HEALTHCHECK, those of its CMD."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    [line] = [x for x in text.splitlines() if x.startswith(instruction + " ")]
    return list(
        json.loads(
            line.split(" CMD ", 1)[1] if instruction == "HEALTHCHECK" else line[len(instruction) + 1 :]
        )
    )


def systemd_unit() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DEPLOY / "systemd" / "blackboard.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )


def test_every_deployment_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 15, files
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), path
    json.loads((DEPLOY / "grafana" / "dashboards" / "blackboard.json").read_text())


def test_stop_timeouts_outlast_the_longest_graceful_shutdown() -> None:
    longest = longest_shutdown(GRACE)
    assert dockerfile_env()["BLACKBOARD_GRACE"] == "30"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert float(compose["services"]["daemon"]["stop_grace_period"].rstrip("s")) > longest
    unit = systemd_unit()
    assert env_file(DEPLOY / "systemd" / "blackboard.env")["BLACKBOARD_GRACE"] == "30"
    assert float(unit["TimeoutStopSec"]) > longest and unit["KillSignal"] == "SIGTERM"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    [config] = [g for g in kustomization["configMapGenerator"] if g["name"] == "blackboard-config"]
    assert "BLACKBOARD_GRACE=30" in config["literals"]
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > longest


def test_probes_ports_and_scrape_targets_match_the_app() -> None:
    from starlette.routing import Route

    from blackboard.daemon import Daemon
    from blackboard.http import create_app
    from blackboard.settings import Settings

    app = create_app(Daemon(Settings(http=False, agents=[], entry_points=False)))
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    port = 8420
    env = dockerfile_env()
    assert env["BLACKBOARD_PORT"] == str(port) and f"EXPOSE {port}" in (DEPLOY / "Dockerfile").read_text()
    [url] = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(dockerfile_json("HEALTHCHECK")))
    assert url == (str(port), "/healthz") and url[1] in paths  # and run, in the entrypoint test
    pod = k8s("Deployment")["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"} and path in paths
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] in paths
    service = k8s("Service")["spec"]["ports"]
    assert service == [{"name": "http", "port": port, "targetPort": "http"}]
    monitor = k8s("ServiceMonitor")["spec"]["endpoints"][0]
    assert monitor["port"] == "http" and monitor["path"] == "/metrics"
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["dns_sd_configs"][0]["port"] == port
    assert env_file(DEPLOY / "systemd" / "blackboard.env")["BLACKBOARD_PORT"] == str(port)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["daemon"]["ports"] == [f"127.0.0.1:8420-8421:{port}"]


def test_the_scaler_targets_the_deployment_on_a_metric_the_daemon_exports() -> None:
    scaled = k8s("ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == k8s("Deployment")["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    names = set(re.findall(r"\b(blackboard_[a-z_]+)\b", trigger["metadata"]["query"]))
    exported = {next(iter(m.collect())).name for m in vars(Metrics()).values() if hasattr(m, "collect")}
    assert names and names <= exported, names - exported
    budget = k8s("PodDisruptionBudget")["spec"]
    pod_labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is not installed (its kustomize renders the manifests)"
)
def test_the_kubernetes_manifests_render() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_kind = {d["kind"]: d for d in docs if d["kind"] != "ConfigMap"}
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "Secret", "ScaledObject"} <= set(
        by_kind
    )
    maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    referenced = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    referenced |= {e["configMapRef"]["name"] for e in pod["containers"][0]["envFrom"] if "configMapRef" in e}
    assert referenced == maps and len(maps) == 3  # the generated (hashed) names are the ones used
    assert all(d["metadata"].get("namespace", "blackboard") == "blackboard" for d in docs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(90)
def test_the_image_entrypoint_runs_as_a_plain_process(tmp_path: Path, redis_url: str) -> None:
    """`blackboard run` with the image's environment (its paths moved under tmp_path, its port a
    free one, the token compose sets): healthy, ready, scraped, its HEALTHCHECK passes, and it
    drains and exits 0 on SIGTERM, as tini would deliver it."""
    env = {**os.environ, **dockerfile_env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    for name in ("agents", "policies"):
        (tmp_path / name).mkdir()
        env[f"BLACKBOARD_{name.upper()}"] = env[f"BLACKBOARD_{name.upper()}"].replace("/app", str(tmp_path))
    (tmp_path / "agents" / "echo.py").write_text((K8S / "agents" / "echo.py").read_text())
    port = free_port()
    env |= {"BLACKBOARD_PORT": str(port), "BLACKBOARD_URL": redis_url, "BLACKBOARD_BOARD": unique_board()}
    env["BLACKBOARD_API_TOKEN"] = "a-long-random-token-for-the-test"
    entrypoint, command = dockerfile_json("ENTRYPOINT"), dockerfile_json("CMD")
    assert entrypoint[:2] == ["tini", "--"]
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*entrypoint[2:], *command], env=env, cwd=tmp_path, stderr=out)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the daemon did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert "blackboard_ready 1.0" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/v1/stats").status_code == 401  # bound beyond loopback: token needed
        token = {"authorization": f"Bearer {env['BLACKBOARD_API_TOKEN']}"}
        posted = httpx.post(
            f"{base}/v1/items", json={"kind": "echo.request", "payload": {"x": 1}}, headers=token
        )
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 20
        while (item := httpx.get(f"{base}/v1/items/{posted.json()['id']}", headers=token).json())[
            "status"
        ] != "done":
            assert time.monotonic() < deadline, item
            time.sleep(0.05)
        assert item["result"] == {"echo": {"x": 1}}  # the mounted agent ran
        check = [a.replace("127.0.0.1:8420", f"127.0.0.1:{port}") for a in dockerfile_json("HEALTHCHECK")]
        assert check[0] == "python"
        assert subprocess.run([sys.executable, *check[1:]], timeout=10).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=longest_shutdown(float(env["BLACKBOARD_GRACE"])))
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert any(r["event"] == "daemon stopped" for r in lines)  # JSON logs, as the image sets
