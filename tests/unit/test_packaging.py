"""The Docker and Kubernetes packaging references only things that exist.

Nothing here needs Docker or a cluster: ``docker-compose.yml``, the ``Dockerfile`` and the manifests in
``deploy/k8s/`` are parsed and checked against the repository, the real ``rapport`` command line (every
command a container runs must parse, options included) and the real ``Settings`` model (every
``RAPPORT_*`` variable must land in a field, since ``Settings`` silently ignores unknown names).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.api.app import create_app
from services.cli.main import app
from services.settings import Settings, StackSettings
from streams.liveness import Liveness

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"

ENV_PREFIX = "RAPPORT_"
PINNED_IMAGES = {"kafka": "apache/kafka:3.9.1", "redis": "redis:7"}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
#: The processes that run until stopped: each is a compose service and a Kubernetes Deployment.
LONG_RUNNING = ("worker", "api", "trainer", "deliver")
#: The ones that sign or verify model snapshots (``RAPPORT_MODELS__SECRET``): the worker scores profiles for
#: segment rules with the served models.
NEED_MODELS_SECRET = ("api", "trainer", "worker")
MODELS_SECRET = "RAPPORT_MODELS__SECRET"
K8S_README = K8S_DIR / "README.md"
#: ``kubectl create secret generic NAME ... --from-literal=KEY=...`` in the README (a command may span lines).
CREATE_SECRET = re.compile(r"kubectl create secret generic (?P<name>[a-z0-9-]+)(?P<args>(?:\\\n|[^\n])*)")
FROM_LITERAL = re.compile(r"--from-literal=(?P<key>[A-Z0-9_]+)=")
K8S_API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
}


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cli() -> Any:
    """The click command behind the Typer app (duck-typed: recent Typer vendors its own click)."""
    command = typer.main.get_command(app)
    assert subcommands(command), "the rapport app should be a group of subcommands"
    return command


def subcommands(command: Any) -> Mapping[str, Any] | None:
    """The subcommands of a group, loaded as an invocation loads them (the CLI imports a subcommand's module
    only when it runs); None for a leaf command."""
    if not hasattr(command, "list_commands"):
        return None
    ctx = typer.Context(command)
    return {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict)
    assert data["services"], "no services defined"
    return data


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    files = sorted(K8S_DIR.glob("*.yaml")) + sorted(K8S_DIR.glob("*.yml"))
    assert files, f"no manifests in {K8S_DIR}"
    docs: list[dict[str, Any]] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path.name}: every document should be a mapping"
            docs.append(doc)
    return docs


def check_rapport_args(cli: Any, argv: list[str], where: str) -> None:
    """``rapport *argv`` names a real (sub)command and its arguments parse, without running it."""
    assert argv, f"{where}: empty rapport command"
    command = cli
    path: list[str] = []
    rest = list(argv)
    while (commands := subcommands(command)) is not None:
        here = " ".join(["rapport", *path])
        assert rest, f"{where}: `{here}` needs a subcommand, one of {sorted(commands)}"
        name = rest.pop(0)
        assert name in commands, f"{where}: `{here}` has no subcommand {name!r}; it has {sorted(commands)}"
        path.append(name)
        command = commands[name]
    prog = " ".join(["rapport", *path])
    try:
        # Parses and converts the arguments exactly as the real invocation would; the callback is not run.
        command.make_context(prog, list(rest))
    except Exception as exc:  # click's UsageError family (from click or Typer's vendored copy)
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"{where}: `{prog} {shlex.join(rest)}` does not parse: {message}")


def settings_field_annotation(name: str) -> Any:
    """The annotation of the Settings field that env var ``name`` sets; fails if there is none."""
    assert name.startswith(ENV_PREFIX), name
    parts = name.removeprefix(ENV_PREFIX).lower().split("__")
    model: type[BaseModel] = Settings
    annotation: Any = None
    for i, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{name}: {model.__name__} has no field {part!r}; it has {sorted(fields)}"
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            assert is_section, f"{name}: {model.__name__}.{part} is not a nested section"
            model = annotation
    return annotation


def check_settings_env(env: Mapping[str, object], where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every RAPPORT_* name maps to a Settings field, and Settings really reads the value into it."""
    rapport_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert rapport_env, f"{where}: no {ENV_PREFIX}* variables"
    expected: dict[str, Any] = {}
    for name, value in rapport_env.items():
        annotation = settings_field_annotation(name)
        if value is None:  # Compose passes `NAME:` with no value through from the host
            continue
        try:
            expected[name] = TypeAdapter(annotation).validate_python(str(value))
        except ValidationError as exc:
            pytest.fail(f"{where}: {name}={value!r} is not a valid value: {exc}")

    with monkeypatch.context() as m:
        for name in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            m.delenv(name)
        for name, value in rapport_env.items():
            if value is not None:
                m.setenv(name, str(value))
        settings = Settings(_env_file=None)
    for name, value in expected.items():
        actual: Any = settings
        for part in name.removeprefix(ENV_PREFIX).lower().split("__"):
            actual = getattr(actual, part)
        assert actual == value, f"{where}: {name}={rapport_env[name]!r} was read as {actual!r}"


def compose_env(service: Mapping[str, Any]) -> dict[str, object]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    assert isinstance(env, dict)
    return env


def compose_command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def is_rapport_service(service: Mapping[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("rapport")


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, arguments = logical.partition(" ")
        yield instruction.upper(), arguments.strip()
        logical = ""


def pod_specs(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind in {"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}:
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [spec]
    return []


def containers(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for pod in pod_specs(doc) for c in [*pod.get("initContainers", []), *pod.get("containers", [])]]


def doc_name(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def container_argv(container: Mapping[str, Any]) -> list[str]:
    """The ``rapport`` arguments a container runs (the image's entrypoint is ``rapport``)."""
    command = [str(c) for c in container.get("command", [])]
    return command[1:] + [str(a) for a in container.get("args", [])]


def documented_secrets() -> dict[str, set[str]]:
    """Secret name → its keys, as the Kubernetes README tells the operator to create them."""
    found: dict[str, set[str]] = {}
    for match in CREATE_SECRET.finditer(K8S_README.read_text()):
        found.setdefault(match["name"], set()).update(m["key"] for m in FROM_LITERAL.finditer(match["args"]))
    return found


def secret_names(container: Mapping[str, Any]) -> set[str]:
    names = {source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source}
    names |= {
        var["valueFrom"]["secretKeyRef"]["name"]
        for var in container.get("env", [])
        if "secretKeyRef" in (var.get("valueFrom") or {})
    }
    return names


def deployed_commands(k8s_docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], Mapping[str, Any]]]:
    """First ``rapport`` word → (Deployment, container) for every container of every Deployment."""
    found: dict[str, tuple[dict[str, Any], Mapping[str, Any]]] = {}
    for doc in k8s_docs:
        if doc["kind"] == "Deployment":
            for container in containers(doc):
                argv = container_argv(container)
                assert argv, f"{doc_name(doc)}: a container without a rapport command"
                found[argv[0]] = (doc, container)
    return found


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


# --------------------------------------------------------------------------------------------- image


def test_pyproject_script_is_the_app_the_image_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["rapport"] == "services.cli.main:main"


def test_dockerfile_entrypoint_is_rapport() -> None:
    instructions = list(dockerfile_instructions())
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert froms
    assert froms[0].startswith("python:3.11-slim")
    entrypoints = [args for ins, args in instructions if ins == "ENTRYPOINT"]
    assert entrypoints
    assert json.loads(entrypoints[-1]) == ["rapport"]
    users = [args for ins, args in instructions if ins == "USER"]
    assert users, "the image should not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, "the image should not run as root"


def test_dockerfile_copies_only_existing_paths() -> None:
    copies = [args for ins, args in dockerfile_instructions() if ins in {"COPY", "ADD"}]
    assert copies
    for args in copies:
        if "--from=" in args:  # copies from another build stage
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            exists = (ROOT / source).exists() or (any(c in source for c in "*?[") and any(ROOT.glob(source)))
            assert exists, f"COPY source {source!r} does not exist"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip().lstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    needed = ["pyproject.toml", "services", "streams", "profiles", "schemas", "deploy"]
    for path in needed:
        assert (ROOT / path).exists(), path
        hits = [p for p in patterns if fnmatch.fnmatch(path, p)]
        assert not hits, f".dockerignore excludes {path} (by {hits})"
    assert {".venv", ".rapport", ".git", ".env"} <= set(patterns)


# --------------------------------------------------------------------------------------------- compose


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, image in PINNED_IMAGES.items():
        assert services[name]["image"] == image
    for name, service in services.items():
        if "build" in service:
            continue
        image = str(service.get("image", ""))
        pinned = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        assert pinned, f"{name}: unpinned image {image!r}"


def test_compose_kafka_matches_the_local_stack_version(compose: dict[str, Any]) -> None:
    kafka_version = StackSettings.model_fields["kafka_version"].default
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version}"


def test_compose_build_contexts_exist(compose: dict[str, Any]) -> None:
    built = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert built, "no service is built from the Dockerfile"
    for name, build in built.items():
        spec = {"context": build} if isinstance(build, str) else build
        context = (COMPOSE_FILE.parent / spec.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / spec.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


def test_compose_commands_are_rapport_commands(compose: dict[str, Any], cli: Any) -> None:
    rapport_services = {name: s for name, s in compose["services"].items() if is_rapport_service(s)}
    assert {"topics", "simulator"} <= set(rapport_services)
    for name, service in rapport_services.items():
        entrypoint = service.get("entrypoint")
        if entrypoint is not None:
            words = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
            assert words == ["rapport"], f"{name}: entrypoint {words} is not rapport"
        check_rapport_args(cli, compose_command(service), f"compose service {name!r}")


def test_compose_depends_on_defined_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {target: {"condition": "service_started"} for target in depends_on}
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on undefined service {target!r}"
            assert target != name
            condition = (spec or {}).get("condition", "service_started")
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {target}: bad condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: no healthcheck"
    simulator = services["simulator"]["depends_on"]
    assert simulator["topics"]["condition"] == "service_completed_successfully"


def test_compose_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":", 1)[0] if ":" in volume else ""
            else:
                source = volume.get("source", "") if volume.get("type", "volume") == "volume" else ""
            if source and not source.startswith(("/", ".", "~", "$")):
                assert source in declared, f"{name}: volume {source!r} is not declared at the top level"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"


def test_compose_runs_every_long_running_process(compose: dict[str, Any]) -> None:
    by_command = compose_services(compose)
    for command in LONG_RUNNING:
        assert command in by_command, f"no compose service runs `rapport {command}`"
        assert by_command[command].get("restart") == "unless-stopped", f"`rapport {command}` is not restarted"
    for command in NEED_MODELS_SECRET:
        env = compose_env(by_command[command])
        assert env.get(MODELS_SECRET), f"`rapport {command}` gets no {MODELS_SECRET}"


def test_compose_rapport_env_maps_to_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in compose["services"].items():
        env = compose_env(service)
        if is_rapport_service(service):
            check_settings_env(env, f"compose service {name!r}", monkeypatch)
        else:
            assert not [k for k in env if k.startswith(ENV_PREFIX)], f"{name} is not a rapport service"


# --------------------------------------------------------------------------------------------- kubernetes


def test_k8s_api_versions(k8s_docs: list[dict[str, Any]]) -> None:
    kinds = {doc.get("kind") for doc in k8s_docs}
    assert {"ConfigMap", "Job"} <= kinds
    for doc in k8s_docs:
        kind = doc.get("kind")
        assert kind in K8S_API_VERSIONS, f"unexpected kind {kind!r}"
        assert doc.get("apiVersion") == K8S_API_VERSIONS[kind], doc_name(doc)
        assert doc.get("metadata", {}).get("name"), f"{kind} without a name"
    for doc in k8s_docs:
        if doc["kind"] == "Job":
            pod = pod_specs(doc)[0]
            assert pod.get("restartPolicy") in {"Never", "OnFailure"}, doc_name(doc)


def test_k8s_commands_are_rapport_commands(k8s_docs: list[dict[str, Any]], cli: Any) -> None:
    checked = 0
    for doc in k8s_docs:
        for container in containers(doc):
            where = f"{doc_name(doc)} container {container.get('name')!r}"
            command = [str(c) for c in container.get("command", ["rapport"])]
            assert command[:1] == ["rapport"], f"{where}: command {command} is not rapport"
            check_rapport_args(cli, container_argv(container), where)
            checked += 1
    assert checked, "no containers in the manifests"


def test_k8s_config_references_exist(k8s_docs: list[dict[str, Any]]) -> None:
    config_maps = {doc["metadata"]["name"]: doc.get("data") or {} for doc in k8s_docs if doc["kind"] == "ConfigMap"}
    for doc in k8s_docs:
        for container in containers(doc):
            where = f"{doc_name(doc)} container {container.get('name')!r}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]["name"]
                    assert ref in config_maps, f"{where}: no ConfigMap {ref!r}"
            for var in container.get("env", []):
                key_ref = (var.get("valueFrom") or {}).get("configMapKeyRef")
                if key_ref:
                    assert key_ref["key"] in config_maps.get(key_ref["name"], {}), f"{where}: {key_ref}"


def test_k8s_rapport_env_maps_to_settings(k8s_docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    config_maps = [doc for doc in k8s_docs if doc["kind"] == "ConfigMap"]
    assert config_maps
    for doc in config_maps:
        check_settings_env(doc.get("data") or {}, doc_name(doc), monkeypatch)
    for doc in k8s_docs:
        for container in containers(doc):
            literal = {v["name"]: v.get("value") for v in container.get("env", []) if "valueFrom" not in v}
            for name in literal:
                if name.startswith(ENV_PREFIX):
                    settings_field_annotation(name)


def test_k8s_deploys_every_long_running_process(k8s_docs: list[dict[str, Any]]) -> None:
    deployed = deployed_commands(k8s_docs)
    assert set(LONG_RUNNING) <= set(deployed), f"no Deployment for {sorted(set(LONG_RUNNING) - set(deployed))}"
    for doc in k8s_docs:
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{doc_name(doc)}: the selector does not match its pods"


def test_k8s_disruption_budgets_select_deployed_pods(k8s_docs: list[dict[str, Any]]) -> None:
    pods = [doc["spec"]["template"]["metadata"]["labels"] for doc in k8s_docs if doc["kind"] == "Deployment"]
    for doc in k8s_docs:
        if doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert any(selector.items() <= labels.items() for labels in pods), f"{doc_name(doc)} selects no pods"
            assert ("minAvailable" in doc["spec"]) != ("maxUnavailable" in doc["spec"]), doc_name(doc)


def test_k8s_secrets_are_documented_and_reach_who_needs_them(k8s_docs: list[dict[str, Any]]) -> None:
    documented = documented_secrets()
    assert documented, f"{K8S_README.name} tells how to create no Secret"
    for name, keys in documented.items():
        assert keys, f"secret {name!r}: no --from-literal keys"
        for key in keys:
            settings_field_annotation(key)
    shipped = {doc["metadata"]["name"] for doc in k8s_docs if doc["kind"] == "Secret"}
    for doc in k8s_docs:
        for container in containers(doc):
            for name in secret_names(container):
                assert name in documented or name in shipped, f"{doc_name(doc)}: Secret {name!r} is never created"
    deployed = deployed_commands(k8s_docs)
    for command in NEED_MODELS_SECRET:
        _, container = deployed[command]
        keys = set().union(*(documented.get(n, set()) for n in secret_names(container)))
        assert MODELS_SECRET in keys, f"`rapport {command}` gets no {MODELS_SECRET}"


def test_k8s_api_ports_probes_and_service_agree(k8s_docs: list[dict[str, Any]]) -> None:
    deployment, container = deployed_commands(k8s_docs)["api"]
    argv = container_argv(container)
    assert option(argv, "--host") == "0.0.0.0", "the API must listen beyond the pod's loopback"
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert str(option(argv, "--port")) in {str(p) for p in ports.values()}, f"--port is not a container port: {ports}"
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]
    routes = {path for path, operations in paths.items() if "get" in operations}
    probes = [container[k] for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in container]
    assert len(probes) >= 2, "the API needs readiness and liveness probes"
    for probe in probes:
        get = probe["httpGet"]
        assert get["path"] in routes, f"probe path {get['path']} is not a GET route of the API"
        assert get["port"] in ports or get["port"] in ports.values(), f"probe port {get['port']} is not declared"
    services = [doc for doc in k8s_docs if doc["kind"] == "Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    exposing = [svc for svc in services if svc["spec"]["selector"].items() <= pod_labels.items()]
    assert exposing, "no Service selects the API's pods"
    for svc in exposing:
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), f"{doc_name(svc)}: targetPort {target} is not declared"


#: The processes with no HTTP server: their liveness is a file their main loop touches (streams/liveness.py).
LIVENESS_FILE = "RAPPORT_STREAM__LIVENESS_FILE"


@pytest.mark.parametrize("command", ["worker", "trainer", "deliver"])
def test_k8s_liveness_probes_read_the_file_the_process_touches(
    k8s_docs: list[dict[str, Any]], command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probes name the file the container's settings say to touch, and their shell command passes on a
    fresh file and fails on a stale or missing one (run here, as the kubelet would in the container)."""
    _, container = deployed_commands(k8s_docs)[command]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert LIVENESS_FILE in env, f"`rapport {command}` is not told to touch a liveness file"
    check_settings_env(env, f"`rapport {command}`", monkeypatch)
    for kind in ("startupProbe", "livenessProbe"):
        check_liveness_probe(container[kind]["exec"]["command"], env[LIVENESS_FILE], tmp_path / kind)


@pytest.mark.parametrize("command", ["worker", "trainer", "deliver"])
def test_compose_healthchecks_read_the_file_the_process_touches(
    compose: dict[str, Any], command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose_services(compose)[command]
    env = compose_env(service)
    assert LIVENESS_FILE in env, f"compose's `rapport {command}` is not told to touch a liveness file"
    check_settings_env(env, f"compose's `rapport {command}`", monkeypatch)
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", f"{command}'s healthcheck: {test}"
    # Compose turns `$$` into `$` before the container sees the command.
    probe = [part.replace("$$", "$") for part in test[1:]]
    check_liveness_probe(probe, str(env[LIVENESS_FILE]), tmp_path)


def test_compose_api_healthcheck_asks_a_get_route_on_its_port(compose: dict[str, Any]) -> None:
    service = compose_services(compose)["api"]
    test = " ".join(service["healthcheck"]["test"])
    found = re.search(r"http://127\.0\.0\.1:(?P<port>\d+)(?P<path>/[\w/]*)", test)
    assert found, f"the API's healthcheck asks no local URL: {test}"
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]
    assert "get" in paths.get(found["path"], {}), f"{found['path']} is not a GET route of the API"
    assert found["port"] == option(compose_command(service), "--port"), "the healthcheck asks another port"


def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """First ``rapport`` word → the compose service running it."""
    return {
        compose_command(s)[0]: s for s in compose["services"].values() if is_rapport_service(s) and compose_command(s)
    }


def check_liveness_probe(argv: list[str], path: str, tmp_path: Path) -> None:
    """The probe names ``path``, and (run here, as the orchestrator would in the container) passes on a
    fresh file and fails on a stale or missing one."""
    assert path in argv[-1], f"the probe {argv} reads another file than {path}"
    local = tmp_path / "alive"
    probe = [*argv[:-1], argv[-1].replace(path, str(local))]
    assert not passes(probe), "passes with no file"
    Liveness(str(local))()
    assert passes(probe), "fails on a fresh file"
    stale = time.time() - 120
    os.utime(local, (stale, stale))
    assert not passes(probe), "passes on a file 2 minutes old"


def passes(probe: list[str]) -> bool:
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0
