"""``rapport demo up | down``: the live stack with simulated traffic (what ``make demo`` runs)."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deploy.localstack import LocalStack, StackError, process
from profiles.store import ProfileStore
from schemas.topics import RAW_EVENT_TOPICS, full_name
from services.api.keys import KeyStore
from services.kafka_clients import make_consumer, topic_partitions
from services.redis_client import make_redis
from services.settings import Settings, get_settings
from services.topics_admin import ensure_topics

app = typer.Typer(help="The live demo: stack, topics and simulated traffic.", no_args_is_help=True)
console = Console()


def _demo_dir(stack: LocalStack) -> Path:
    return stack.state_dir / "demo"


def _simulator_marker(stack: LocalStack) -> str:
    return f"--truth {_demo_dir(stack) / 'truth.jsonl'}"


def _ensure_process(name: str, argv: list[str], marker: str, stack: LocalStack) -> int:
    """Start a demo process unless the one recorded in its PID file still runs; returns its PID."""
    demo_dir = _demo_dir(stack)
    pid_file = demo_dir / f"{name}.pid"
    running = process.read_pid(pid_file)
    if running and process.is_alive(running) and marker in process.cmdline(running):
        console.print(f"{name} already running (pid {running})")
        return running
    pid = process.start_detached(argv, log_file=demo_dir / f"{name}.log", cwd=Path.cwd())
    process.write_pid(pid_file, pid)
    console.print(f"{name} started (pid {pid}), log {demo_dir / f'{name}.log'}")
    return pid


@app.command("up")
def up(
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of history, ending now.")] = 30,
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second streamed into Kafka (the history; 0: as fast as possible).")
    ] = 1000.0,
    live_days: Annotated[
        int, typer.Option(min=0, help="Days of traffic after the history, each event sent when it happens.")
    ] = 7,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Start (or reuse) the stack, create the topics and stream simulated traffic in the background."""
    settings = get_settings()
    stack = LocalStack(settings)
    console.print("[bold]starting the stack[/] (the first run fetches Kafka from Maven Central)")
    try:
        outcomes = stack.up()
    except StackError as error:  # a missing tool (Java, Maven), a node that would not start: its log says why
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    for name, outcome in outcomes.items():
        console.print(f"  {name}: {outcome}")
    for report in ensure_topics(settings):
        console.print(f"  topic {report.name}: {report.state}")

    _models_secret(settings, stack)  # the trainer signs snapshots with it and the API verifies them
    for name in ("worker", "trainer", "api"):
        _ensure_process(name, [sys.executable, "-m", "services.cli.main", name], f"services.cli.main {name}", stack)
    key_file = asyncio.run(_demo_key(settings, stack))
    start = (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0)
    simulator = [
        sys.executable, "-m", "services.cli.main", "simulate",
        "--customers", str(customers), "--days", str(days + live_days), "--seed", str(seed),
        "--start", start.isoformat().replace("+00:00", "Z"),
        "--to-kafka", "--send-malformed", "--rate", str(rate), "--real-time",
        *_simulator_marker(stack).split(),
    ]  # fmt: skip
    _ensure_process("simulator", simulator, _simulator_marker(stack), stack)
    log_file = _demo_dir(stack) / "simulator.log"
    flowing = _wait_for_events(settings, timeout_s=90)
    if not flowing:
        console.print(f"[red]no events reached Kafka within 90 s[/]; see {log_file}")
        raise typer.Exit(1)
    example = asyncio.run(_first_customer_profile(settings, timeout_s=120))
    if example is None:
        console.print(f"[red]no profile appeared in Redis within 120 s[/]; see {_demo_dir(stack) / 'worker.log'}")
        raise typer.Exit(1)
    live = f", then {live_days} days live: each event sent when it happens" if live_days else ""
    traffic = f"{customers:,} simulated customers: {days} days of history at {rate:,.0f} events/s{live}"
    _where_to_look(settings, stack, log_file, example, key_file, traffic=traffic)


@app.command("down")
def down(
    stack_too: Annotated[bool, typer.Option("--stack/--no-stack", help="Also stop Kafka and Redis.")] = False,
) -> None:
    """Stop the demo's simulator, worker, trainer and API (and, with --stack, the stack it started)."""
    stack = LocalStack(get_settings())
    demo_processes = (
        ("simulator", _simulator_marker(stack)),
        ("worker", "services.cli.main worker"),
        ("trainer", "services.cli.main trainer"),
        ("api", "services.cli.main api"),
    )
    for name, marker in demo_processes:
        pid_file = _demo_dir(stack) / f"{name}.pid"
        pid = process.read_pid(pid_file)
        if pid and process.is_alive(pid) and marker in process.cmdline(pid):
            process.stop_pid(pid)
            console.print(f"{name} stopped (pid {pid})")
        pid_file.unlink(missing_ok=True)
    if stack_too:
        for name, stopped in stack.down().items():
            console.print(f"  {name}: {'stopped pid ' + str(stopped) if stopped else 'not ours / not running'}")


def _wait_for_events(settings: Settings, timeout_s: float) -> bool:
    """Whether records show up in the raw topics: proof that traffic flows, not just that a process runs."""
    consumer = make_consumer(settings, "demo")
    try:
        names = [full_name(spec, settings.kafka.topic_prefix) for spec in RAW_EVENT_TOPICS]
        deadline = time.monotonic() + timeout_s
        baseline: int | None = None
        while time.monotonic() < deadline:
            partitions = [tp for name in names for tp in topic_partitions(consumer, name)]
            total = sum(consumer.end_offsets(partitions).values())
            if baseline is None:
                baseline = total
            elif total > baseline:
                return True
            time.sleep(1)
        return False
    finally:
        consumer.close()


async def _first_customer_profile(settings: Settings, timeout_s: float) -> str | None:
    """The id of some known customer's profile, once the worker has written one."""
    redis = make_redis(settings)
    store = ProfileStore(redis, settings.profile.namespace)
    pattern = store.profile_key("c*")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            async for key in redis.scan_iter(match=pattern, count=1000):
                name: str = key.decode()
                return name.split(":p:{", 1)[1].rstrip("}")
            await asyncio.sleep(1)
        return None
    finally:
        await redis.aclose()


def _models_secret(settings: Settings, stack: LocalStack) -> None:
    """The configured model secret, or one made for this demo (kept in a 0600 file), passed on to the
    processes the demo starts."""
    if settings.models.secret.get_secret_value():
        return
    secret_file = _demo_dir(stack) / "models-secret"
    if not secret_file.exists():
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_urlsafe(32))
    os.environ["RAPPORT_MODELS__SECRET"] = secret_file.read_text().strip()


async def _demo_key(settings: Settings, stack: LocalStack) -> Path:
    """An API key for the demo (profiles:read, scores:read, events:write), created once; its token in a 0600
    file."""
    key_file = _demo_dir(stack) / "api-key"
    redis = make_redis(settings)
    try:
        keys = KeyStore(redis)
        known = await keys.authenticate(key_file.read_text().strip()) if key_file.exists() else None
        if known is not None and "scores:read" in known.scopes:
            return key_file  # still known to this Redis
        token, _ = await keys.create(
            "demo", ["profiles:read", "scores:read", "events:write"], publishable=False, origins=[], rate_per_s=1000.0
        )
    finally:
        await redis.aclose()
    key_file.unlink(missing_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(token)
    return key_file


def _where_to_look(
    settings: Settings, stack: LocalStack, log_file: Path, example: str, key_file: Path, *, traffic: str
) -> None:
    console.print(
        f"""
[bold green]Rapport demo is running.[/]
  traffic {traffic}
  Kafka   {settings.kafka.bootstrap_servers}  (topics: rapport topics list)
  Redis   {settings.redis.url}
  logs    {stack.state_dir}/kafka/logs, {stack.state_dir}/redis/logs, {log_file}

Look at it:
  .venv/bin/rapport profile get {example}        a live profile (any customer id, anonymous id or email)
  curl -H "Authorization: Bearer $(cat {key_file})" http://{settings.api.host}:{settings.api.port}/v1/profiles/{example}
                                                the same over HTTP (API docs: http://{settings.api.host}:{settings.api.port}/docs)
  curl -H "Authorization: Bearer $(cat {key_file})" http://{settings.api.host}:{settings.api.port}/v1/profiles/{example}/scores
                                                its scores (cold_start: true until a model has learned enough)
  RAPPORT_MODELS__SECRET=$(cat {_demo_dir(stack) / "models-secret"}) .venv/bin/rapport models list
                                                model versions and their rolling metrics vs baselines
  .venv/bin/rapport tail events.clicks          live click events, as any Kafka consumer sees them
  .venv/bin/rapport tail events.dlq --headers   rejected events with their reasons (the simulator sends ~0.5% malformed)
  .venv/bin/rapport dlq summary                 dead letters by reason and source topic
  .venv/bin/rapport stack status                what runs where
  grep ' stats ' {log_file.parent / "worker.log"} | tail -3   worker throughput and freshness

Stop it:  make demo-stop  (traffic)   ·   make stack-down  (Kafka and Redis)
""",
        soft_wrap=True,
    )
