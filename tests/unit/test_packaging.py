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
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.cli.main import app
from services.settings import Settings, StackSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"

ENV_PREFIX = "RAPPORT_"
PINNED_IMAGES = {"kafka": "apache/kafka:3.9.1", "redis": "redis:7"}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
K8S_API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
}


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cli() -> Any:
    """The click command behind the Typer app (duck-typed: recent Typer vendors its own click)."""
    command = typer.main.get_command(app)
    assert subcommands(command), "the rapport app should be a group of subcommands"
    return command


def subcommands(command: Any) -> Mapping[str, Any] | None:
    """The subcommands of a group, None for a leaf command."""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, Mapping) else None


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


# --------------------------------------------------------------------------------------------- image


def test_pyproject_script_is_the_app_the_image_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["rapport"] == "services.cli.main:app"


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
            args = [str(a) for a in container.get("args", [])]
            if "command" in container:
                command = [str(c) for c in container["command"]]
                assert command[:1] == ["rapport"], f"{where}: command {command} is not rapport"
                args = command[1:] + args
            check_rapport_args(cli, args, where)
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
