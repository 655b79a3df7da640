"""The ``rapport`` entry point loads a subcommand's module only when that subcommand runs, and says in one line
when Redis or Kafka cannot be reached."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError
from redis.exceptions import ResponseError

from services.cli.main import COMMANDS, MISCONFIGURED, UNREACHABLE, load_command, unreachable
from tests.api_support import free_port
from tests.kafka_support import rapport

HEAVY = ("river", "scipy", "fastapi", "faust", "uvicorn")


def nothing_listening() -> dict[str, str]:
    """Redis and Kafka configured on ports nothing listens on; Kafka given up on after 1 s."""
    return {
        "RAPPORT_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "RAPPORT_KAFKA__BOOTSTRAP_TIMEOUT_S": "1",
    }


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_loads_under_its_name(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    assert command.help, f"`rapport {name}` has no help line"


def test_a_light_command_imports_neither_the_models_nor_the_servers() -> None:
    assert _imported_by(["keys", "--help"], "create") == set()


@pytest.mark.parametrize("command", ["namespace", "replay"])
def test_namespaces_and_replays_import_no_learner(command: str) -> None:
    """River and SciPy take ~0.9 s to import: a replay without ``--retrain`` and ``rapport namespace hash``
    never train nor score, and engineers run them in loops. (Promoting imports them if a rule reads scores.)"""
    assert not _imported_by([command, "--help"], "Usage") & {"river", "scipy"}


def _imported_by(args: list[str], shown: str) -> set[str]:
    """Which of ``HEAVY`` running ``rapport *args`` imported; its output must contain ``shown``."""
    code = (
        "import sys\n"
        "from services.cli.main import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"print('imported:', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout, done.stdout
    last = done.stdout.splitlines()[-1]
    assert last.startswith("imported: "), last
    return set(filter(None, last.removeprefix("imported: ").split(",")))


def test_a_command_that_cannot_reach_redis_says_so_in_one_line() -> None:
    """Nothing listens on the port: one line naming Redis and its address, and exit status 75 (try again
    later), not a traceback."""
    done = rapport("profile", "get", "c-1", env=nothing_listening())
    assert done.returncode == UNREACHABLE, done.stderr
    assert done.stderr.startswith("rapport: Redis is unreachable (Error 111 connecting to 127.0.0.1:"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_a_command_that_cannot_reach_kafka_says_so_within_the_bootstrap_timeout() -> None:
    """``kafka.bootstrap_timeout_s`` bounds the wait (kafka-python's own default is 30 s): here 1 s, so the
    answer comes far sooner than the default would allow, in one line naming Kafka."""
    started = time.monotonic()
    done = rapport("tail", "events.clicks", env=nothing_listening())
    assert done.returncode == UNREACHABLE, done.stderr
    assert done.stderr.startswith("rapport: Kafka is unreachable (KafkaTimeoutError: Unable to bootstrap"), done.stderr
    assert time.monotonic() - started < 15, "the bootstrap timeout was not applied (the default is 30 s)"


def test_only_unreachable_clients_are_named() -> None:
    assert unreachable(KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9")) == "Kafka"
    assert unreachable(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")) is None
    assert unreachable(ValueError("not an outage")) is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["produce", "/nonexistent/events.jsonl"], "/nonexistent/events.jsonl: No such file or directory"),
        (["produce", "/"], "/: Is a directory"),
        (["schemas", "export", "--out", "/proc/rapport-schemas"], "/proc/rapport-schemas: No such file or directory"),
    ],
)
def test_a_file_that_cannot_be_opened_is_a_usage_error_naming_it(args: list[str], named: str) -> None:
    """Exit status 2 and the path with the system's reason, not a traceback."""
    done = rapport(*args, env=nothing_listening())
    assert done.returncode == 2, done.stderr
    assert named in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["tail", "events.clicks", "-n", "-5"], "greater than or equal to 0"),
        (["replay", "--into", "rx", "--from", "2026-12-01T00:00:00Z", "--to", "2026-11-01T00:00:00Z"], "is after --to"),
        (["keys", "create", "--name", "k", "--scopes", "admin", "--rate-limit", "-3"], "must be a positive number"),
        (["keys", "create", "--name", "k", "--scopes", "admin", "--rate-limit", "0"], "must be a positive number"),
        # Until 2026-12-07 a key with no name was created.
        (["keys", "create", "--name", " ", "--scopes", "admin"], "a key needs a name"),
        (["keys", "create", "--name", "k" * 201, "--scopes", "admin"], "at most 200 characters"),
        (["produce", "/etc/hostname", "--rate", "-1"], "greater than or equal to 0"),
        (["api", "--port", "70000"], "less than or equal to 65535"),
        (["dlq", "redrive", "no_such_reason"], "unknown reason 'no_such_reason'"),
        (["dlq", "redrive", "corrupt_resolved_record"], "dead letters are not re-sent"),
        (["dlq", "redrive", "malformed_json", "--since", "yesterday"], "'yesterday' is not an RFC 3339 instant"),
        (["dlq", "summary", "--since", "2026-12-01T00:00:00"], "give a UTC offset"),
        (["replay", "--into", "rx", "--to", "earliest"], "'earliest' is not an RFC 3339 instant"),
        # Until session 40 a replay of nothing, recorded as done up to now.
        (["replay", "--into", "rx", "--from", "2999-01-01T00:00:00Z"], "is in the future"),
        (["simulate", "--out", "/tmp/never-written.jsonl", "--send-malformed"], "--send-malformed goes with"),
    ],
)
def test_a_meaningless_option_is_a_usage_error_before_any_service_is_reached(args: list[str], said: str) -> None:
    """Nothing listens where Kafka and Redis are configured: a command that got past its checks would answer
    75 (unreachable) instead of 2."""
    done = rapport(*args, env=nothing_listening())
    assert done.returncode == 2, done.stderr
    assert said in " ".join(done.stderr.replace("│", " ").split()), done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "get", "c-\udcff"],
        ["keys", "create", "--name", "\udcff", "--scopes", "admin"],
        ["segments", "get", "x\udcff"],
        ["webhooks", "rewind", "wh_\udcff", "--to", "now", "--yes"],
    ],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(args: list[str]) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates: until 2026-12-07 these commands ended in a
    traceback when the id or name was encoded for Redis."""
    done = rapport(*args, env=nothing_listening())
    assert done.returncode == 2, done.stderr
    assert "is not UTF-8 text" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_settings_are_named_by_their_variables_in_a_few_lines() -> None:
    """Exit status 78 (EX_CONFIG) and one line per wrong variable, not pydantic's traceback."""
    env = {"RAPPORT_PROFILE__NAMESPACE": "Live", "RAPPORT_STREAM__MAX_POLL_RECORDS": "many"}
    done = rapport("profile", "get", "c-1", env=env)
    assert done.returncode == MISCONFIGURED, done.stderr
    assert done.stderr.splitlines() == [
        "rapport: invalid settings (environment or .env):",
        "  RAPPORT_STREAM__MAX_POLL_RECORDS: Input should be a valid integer, unable to parse string as an integer",
        "  RAPPORT_PROFILE__NAMESPACE: 'Live' is not a namespace name ([a-z0-9][a-z0-9_-]{0,62})",
    ]


def test_demo_up_says_in_one_line_why_the_stack_cannot_start(tmp_path: Path) -> None:
    """The README's first command, on a machine without Java, Maven or redis-server: until session 40 a
    ``MissingToolError`` traceback."""
    (tmp_path / "empty-bin").mkdir()
    env = {
        **nothing_listening(),
        "PATH": str(tmp_path / "empty-bin"),
        "RAPPORT_STACK__STATE_DIR": str(tmp_path / "stack"),
        "RAPPORT_STACK__KAFKA_PORT": str(free_port()),
        "RAPPORT_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
        "RAPPORT_STACK__REDIS_PORT": str(free_port()),
    }
    done = rapport("demo", "up", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert re.search(r"error:.*(apt-get install|openjdk-17-jre-headless)", done.stdout), done.stdout
