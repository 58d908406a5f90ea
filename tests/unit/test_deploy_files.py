"""docker-compose.yml, the Dockerfiles, .dockerignore and the Prometheus config, against the code.

No Docker engine needed: these read the files and check that every path, service name, setting and
port they mention exists in the code, so a rename fails here instead of at `docker compose up`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from paperwire.launcher import SERVICES
from paperwire_embed.config import Settings as EmbedSettings
from paperwire_ingest.config import Settings as IngestSettings
from paperwire_notify.config import Settings as NotifySettings
from paperwire_recommend.config import Settings as RecommendSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS: dict[str, Any] = yaml.safe_load(
    (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
)
SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "embed": EmbedSettings,
    "recommend": RecommendSettings,
    "notify": NotifySettings,
}
# Settings naming the servers a service connects to (PUBLIC_URL is for readers' browsers).
SERVER_URLS = ("REDIS_URL", "QDRANT_URL", "DATABASE_URL", "SMTP_URL")
HEALTH_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s]*)")


# Reading the files


def interpolate(value: object) -> str:
    """Compose's ``${NAME:-default}`` as its default (not the host's variable), ``$$`` as $."""
    return re.sub(
        r"\$\$|\$\{\w+(?::?-([^}]*))?\}",
        lambda m: "$" if m.group(0) == "$$" else (m.group(1) or ""),
        str(value),
    )


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def built() -> dict[str, dict[str, Any]]:
    """The compose services built from this repo."""
    return {name: spec for name, spec in COMPOSE["services"].items() if "build" in spec}


def build_paths(spec: dict[str, Any]) -> tuple[Path, Path]:
    """(context, Dockerfile) of a built compose service."""
    build = spec["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found, current = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        current = ""
    return found


def exec_form(arguments: str, where: str) -> list[str]:
    # The shell form would run under /bin/sh, which does not pass SIGTERM on to paperwire.
    assert arguments.startswith("["), f"{where} must use the exec (JSON) form: {arguments}"
    return json.loads(arguments)


def container_command(spec: dict[str, Any]) -> list[str]:
    """What a built compose service runs: its ``command``, else its Dockerfile's CMD."""
    if "command" in spec:
        command = spec["command"]
        return command if isinstance(command, list) else shlex.split(command)
    _, dockerfile = build_paths(spec)
    cmds = [args for keyword, args in instructions(dockerfile) if keyword == "CMD"]
    assert cmds, f"{dockerfile} has no CMD"
    return exec_form(cmds[-1], f"{dockerfile} CMD")


def service_of(compose_name: str) -> str:
    """The paperwire service a built compose service runs (`paperwire run SERVICE ...`)."""
    return container_command(built()[compose_name])[2]


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables pydantic-settings reads for the fields of ``settings``."""
    config = settings.model_config
    by_name = config.get("populate_by_name") or config.get("validate_by_name")
    names: set[str] = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(c if isinstance(c, str) else str(c.path[0]) for c in alias.choices)
        elif isinstance(alias, AliasPath):
            names.add(str(alias.path[0]))
        if alias is None or by_name:
            names.add(config.get("env_prefix", "") + name)
    if config.get("case_sensitive"):
        return names
    return {n.upper() for n in names}


def settings_from_compose(compose_name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings as its container builds them: from the compose environment only."""
    settings = SETTINGS[service_of(compose_name)]
    with monkeypatch.context() as env:
        known = env_names(settings)
        for key in list(os.environ):
            if key.upper() in known:
                env.delenv(key)
        for key, value in environment(built()[compose_name]).items():
            env.setenv(key, value)
        return settings()


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(keep, pattern) per .dockerignore line: ``*`` within a name, ``**`` across folders."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex = re.sub(
            r"\*\*/|\*\*|\*|\?|[^*?]+",
            lambda m: {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                m.group(0), re.escape(m.group(0))
            ),
            pattern,
        )
        rules.append((keep, re.compile(regex)))
    return rules


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its folders decides."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for keep, regex in dockerignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not keep
    return result


def left_out_on_purpose(path: Path) -> bool:
    """Build leftovers, and the Dockerfiles (so editing one does not invalidate its COPY layer)."""
    return (
        path.name == "Dockerfile"
        or path.suffix == ".pyc"
        or any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)
    )


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile's COPY and ADD take (not those from other stages)."""
    sources = []
    for keyword, arguments in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        if any(w.startswith("--from") for w in words):
            continue
        sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


# The checks


def test_every_paperwire_service_has_a_container_built_from_its_dockerfile() -> None:
    assert sorted(service_of(name) for name in built()) == sorted(SERVICES)
    for name in SERVICES:
        assert (ROOT / "services" / name / "Dockerfile").is_file()


def test_every_compose_service_that_builds_has_an_existing_dockerfile_and_context() -> None:
    for name, spec in built().items():
        context, dockerfile = build_paths(spec)
        assert context.is_dir(), f"{name}: no build context {context}"
        assert dockerfile.is_file(), f"{name}: no Dockerfile {dockerfile}"
        # The Dockerfiles copy shared/ and the CLI: only the repo root holds them all.
        assert context == ROOT, f"{name}: the build context must be the repo root"


def test_every_paperwire_run_command_names_a_real_service() -> None:
    for name, spec in built().items():
        command = container_command(spec)
        assert command[:2] == ["paperwire", "run"], f"{name} runs {command}"
        assert command[2] in SERVICES, f"{name} runs an unknown service: {command}"
    for dockerfile in ROOT.glob("services/*/Dockerfile"):
        cmds = [args for keyword, args in instructions(dockerfile) if keyword == "CMD"]
        command = exec_form(cmds[-1], f"{dockerfile} CMD")
        # The image in services/<name>/ runs <name>.
        assert command[:3] == ["paperwire", "run", dockerfile.parent.name]


def test_services_listen_on_all_interfaces_inside_their_containers() -> None:
    # `paperwire run SERVICE` listens on 127.0.0.1 unless told otherwise: reachable by its own
    # healthcheck, but by nothing else (not the published port, not Prometheus).
    for name, spec in built().items():
        command = container_command(spec)
        assert "--host" in command, f"{name}: {command}"
        assert command[command.index("--host") + 1] == "0.0.0.0"


def test_every_variable_compose_sets_on_a_service_is_a_field_of_its_settings() -> None:
    for name, spec in built().items():
        settings = SETTINGS[service_of(name)]
        known = env_names(settings)
        fold = str if settings.model_config.get("case_sensitive") else str.upper
        unknown = {key for key in environment(spec) if fold(key) not in known}
        assert not unknown, f"{name} sets {sorted(unknown)}, not settings of {settings.__module__}"


def test_compose_environment_alone_configures_each_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in built():
        settings = settings_from_compose(name, monkeypatch)  # raises on a missing required field
        assert str(settings.data_dir) == "/data"
    recommend = next(n for n in built() if service_of(n) == "recommend")
    assert settings_from_compose(recommend, monkeypatch).host == "0.0.0.0"


def test_every_dockerfile_copies_only_what_the_build_context_keeps() -> None:
    for name, spec in built().items():
        context, dockerfile = build_paths(spec)
        sources = copy_sources(dockerfile)
        assert sources, f"{dockerfile} copies nothing"
        for source in sources:
            path = context / source
            assert path.exists(), f"{dockerfile}: COPY {source}: no such path"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(context)
                if left_out_on_purpose(relative):
                    continue
                assert not ignored(str(relative)), f"{name}: .dockerignore drops {relative}"


def test_build_context_leaves_out_the_venv_data_and_build_leftovers() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/paperwire.db",
        "tests/conftest.py",
        "shared/paperwire_shared.egg-info/PKG-INFO",
        "services/embed/paperwire_embed/__pycache__/app.cpython-311.pyc",
    ):
        assert ignored(path), path
    assert not ignored("shared/paperwire_shared/events.py")


def test_healthchecks_probe_healthz_or_readyz_on_the_service_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, spec in built().items():
        test = spec["healthcheck"]["test"]
        # python:3.11-slim has neither curl nor wget.
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: {test}"
        found = HEALTH_URL.search(test[3])
        assert found, f"{name}: no local URL in {test}"
        port, path = int(found.group(1)), found.group(2)
        assert path in ("/healthz", "/readyz"), f"{name} probes {path}"
        assert port == settings_from_compose(name, monkeypatch).port, f"{name} probes port {port}"


def test_services_wait_for_the_healthy_servers_their_urls_name() -> None:
    services = COMPOSE["services"]
    for name, spec in built().items():
        depends_on = spec.get("depends_on") or {}
        for key, url in environment(spec).items():
            if key not in SERVER_URLS:
                continue
            host = urlsplit(url).hostname
            assert host in services, f"{name}: {key} names {host}, not a compose service"
            assert depends_on.get(host, {}).get("condition") == "service_healthy", (
                f"{name} does not wait for {host} to be healthy"
            )
    for name, spec in services.items():
        for target, condition in (spec.get("depends_on") or {}).items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"


def test_database_urls_log_in_to_the_postgres_service() -> None:
    postgres = environment(COMPOSE["services"]["postgres"])
    for name, spec in built().items():
        url = environment(spec).get("DATABASE_URL")
        if url is None:
            continue
        parts = urlsplit(url)
        assert parts.scheme == "postgresql+psycopg", f"{name}: {url}"
        assert parts.username == postgres["POSTGRES_USER"]
        assert parts.password == postgres["POSTGRES_PASSWORD"]
        assert parts.path.lstrip("/") == postgres["POSTGRES_DB"]


def test_prometheus_scrapes_every_service_on_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    scraped = {}
    for job in PROMETHEUS["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in built(), f"{job['job_name']} scrapes {host}, not a paperwire service"
                scraped[host] = int(port)
    assert set(scraped) == set(built())
    for name, port in scraped.items():
        assert port == settings_from_compose(name, monkeypatch).port, f"{name} on {port}"


def test_prometheus_runs_only_under_the_observability_profile_with_this_config() -> None:
    prometheus = COMPOSE["services"]["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert (ROOT / mounts["/etc/prometheus/prometheus.yml"]).resolve() == (
        ROOT / "deploy" / "prometheus" / "prometheus.yml"
    )


def test_every_file_compose_mounts_from_the_repo_exists() -> None:
    for name, spec in COMPOSE["services"].items():
        for volume in spec.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# The Compose Specification, and what the file names beyond the paperwire containers

COMPOSE_SCHEMA = ROOT / "deploy" / "compose-spec" / "compose-spec.json"
# Ports the third-party images listen on (their documented defaults; compose changes none).
THIRD_PARTY_PORTS = {"mailpit": {1025, 8025}, "prometheus": {9090}, "grafana": {3000}}


def schema_errors(document: dict[str, Any]) -> list[str]:
    import jsonschema

    # The file says draft-07 as "https://json-schema.org/draft-07/schema" (no "#"), which
    # jsonschema does not recognise: name the draft here.
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def mounts(spec: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (or volume name) of a service's volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in spec.get("volumes") or []}


def project_version(service: str) -> str:
    import tomllib

    pyproject = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    return pyproject["project"]["version"]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(COMPOSE) == []
    # The schema is live: a misspelt key in a service is refused.
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["redis"]["heathcheck"] = broken["services"]["redis"].pop("healthcheck")
    assert any("heathcheck" in error for error in schema_errors(broken))


def test_every_image_compose_pulls_is_pinned_to_a_version() -> None:
    for name, spec in COMPOSE["services"].items():
        if "build" in spec:
            continue
        repository, _, tag = spec["image"].rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin {spec['image']}"


def test_images_compose_builds_are_named_after_their_service_and_version() -> None:
    # deploy/k8s runs these tags (checked in test_k8s_manifests.py).
    for name, spec in built().items():
        service = service_of(name)
        assert spec["image"] == f"paperwire-{service}:{project_version(service)}"


def test_every_published_port_reaches_a_port_the_container_listens_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = set()
    for name, spec in COMPOSE["services"].items():
        for port in spec.get("ports") or []:
            host_ip, host_port, container_port = str(port).split(":")
            # The API has no authentication and Mailpit shows every email: local only.
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            assert host_port not in seen, f"{name}: host port {host_port} published twice"
            seen.add(host_port)
            if name in built():
                listens = {settings_from_compose(name, monkeypatch).port}
            else:
                listens = THIRD_PARTY_PORTS[name]
            assert int(container_port) in listens, f"{name}: nothing listens on {container_port}"


def test_prometheus_loads_the_alert_rules_compose_mounts_beside_its_config() -> None:
    prometheus = mounts(COMPOSE["services"]["prometheus"])
    config_dir = Path("/etc/prometheus/prometheus.yml").parent
    for rule_file in PROMETHEUS["rule_files"]:
        target = str(config_dir / rule_file)
        assert target in prometheus, f"prometheus.yml loads {target}, which compose does not mount"
        assert (ROOT / prometheus[target]).resolve() == (
            ROOT / "deploy" / "prometheus" / rule_file
        ).resolve()


def test_grafana_runs_under_the_observability_profile_with_the_repo_dashboards() -> None:
    grafana = COMPOSE["services"]["grafana"]
    assert grafana["profiles"] == ["observability"]
    volumes = mounts(grafana)
    provisioning = ROOT / volumes["/etc/grafana/provisioning"]
    assert provisioning.resolve() == (ROOT / "deploy" / "grafana" / "provisioning").resolve()
    # The dashboard provider reads the folder compose mounts the dashboards into.
    for provider_file in (provisioning / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            path = provider["options"]["path"]
            assert path in volumes, f"{provider_file}: {path} is not mounted"
            assert list((ROOT / volumes[path]).glob("*.json")), f"no dashboards in {path}"
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, file = str(Path(home).parent), Path(home).name
    assert (ROOT / volumes[folder] / file).is_file(), f"home dashboard {home} does not exist"


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    datasources = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
    urls = [
        urlsplit(source["url"])
        for file in datasources.glob("*.yml")
        for source in yaml.safe_load(file.read_text())["datasources"]
    ]
    assert urls, "no datasource provisioned"
    for url in urls:
        assert url.hostname in COMPOSE["services"], f"{url.hostname} is not a compose service"
        assert url.port in THIRD_PARTY_PORTS[url.hostname]
    grafana = COMPOSE["services"]["grafana"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_recommend_and_notify_sign_links_with_the_same_key() -> None:
    # Unset, each uses the development key in its /data: one volume makes it one key.
    services = COMPOSE["services"]
    recommend, notify = services["recommend"], services["notify"]
    for key in ("PAPERWIRE_SECRET_KEY", "PAPERWIRE_ENV"):
        assert recommend["environment"][key] == notify["environment"][key], key
    assert mounts(recommend)["/data"] == mounts(notify)["/data"]
    assert environment(recommend)["PAPERWIRE_DATA_DIR"] == "/data"
