"""``rapport demo up | down``: the live stack with simulated traffic (what ``make demo`` runs)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deploy.localstack import LocalStack, process
from schemas.topics import RAW_EVENT_TOPICS, full_name
from services.kafka_clients import make_consumer, topic_partitions
from services.settings import Settings, get_settings
from services.topics_admin import ensure_topics

app = typer.Typer(help="The live demo: stack, topics and simulated traffic.", no_args_is_help=True)
console = Console()


def _demo_dir(stack: LocalStack) -> Path:
    return stack.state_dir / "demo"


def _simulator_marker(stack: LocalStack) -> str:
    return f"--truth {_demo_dir(stack) / 'truth.jsonl'}"


@app.command("up")
def up(
    customers: Annotated[int, typer.Option(help="Simulated customers.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of history, ending now.")] = 30,
    rate: Annotated[float, typer.Option(help="Events per second streamed into Kafka.")] = 1000.0,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Start (or reuse) the stack, create the topics and stream simulated traffic in the background."""
    settings = get_settings()
    stack = LocalStack(settings)
    console.print("[bold]starting the stack[/] (the first run fetches Kafka from Maven Central)")
    for name, outcome in stack.up().items():
        console.print(f"  {name}: {outcome}")
    for report in ensure_topics(settings):
        console.print(f"  topic {report.name}: {report.state}")

    demo_dir = _demo_dir(stack)
    pid_file = demo_dir / "simulator.pid"
    log_file = demo_dir / "simulator.log"
    running = process.read_pid(pid_file)
    if running and process.is_alive(running) and _simulator_marker(stack) in process.cmdline(running):
        console.print(f"simulator already running (pid {running})")
    else:
        start = (datetime.now(UTC) - timedelta(days=days)).replace(microsecond=0)
        argv = [
            sys.executable, "-m", "services.cli.main", "simulate",
            "--customers", str(customers), "--days", str(days), "--seed", str(seed),
            "--start", start.isoformat().replace("+00:00", "Z"),
            "--to-kafka", "--rate", str(rate),
            *_simulator_marker(stack).split(),
        ]  # fmt: skip
        pid = process.start_detached(argv, log_file=log_file, cwd=Path.cwd())
        process.write_pid(pid_file, pid)
        console.print(f"simulator started (pid {pid}): {customers} customers, {days} days, {rate:.0f} events/s")
    flowing = _wait_for_events(settings, timeout_s=90)
    if not flowing:
        console.print(f"[red]no events reached Kafka within 90 s[/]; see {log_file}")
        raise typer.Exit(1)
    _where_to_look(settings, stack, log_file)


@app.command("down")
def down(
    stack_too: Annotated[bool, typer.Option("--stack/--no-stack", help="Also stop Kafka and Redis.")] = False,
) -> None:
    """Stop the demo's simulator (and, with --stack, the stack it started)."""
    stack = LocalStack(get_settings())
    pid_file = _demo_dir(stack) / "simulator.pid"
    pid = process.read_pid(pid_file)
    if pid and process.is_alive(pid) and _simulator_marker(stack) in process.cmdline(pid):
        process.stop_pid(pid)
        console.print(f"simulator stopped (pid {pid})")
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


def _where_to_look(settings: Settings, stack: LocalStack, log_file: Path) -> None:
    console.print(
        f"""
[bold green]Rapport demo is running.[/]
  Kafka   {settings.kafka.bootstrap_servers}  (topics: rapport topics list)
  Redis   {settings.redis.url}
  logs    {stack.state_dir}/kafka/logs, {stack.state_dir}/redis/logs, {log_file}

Look at it:
  .venv/bin/rapport tail events.clicks          live click events, as any Kafka consumer sees them
  .venv/bin/rapport tail events.purchases -n 3  the latest orders and refunds
  .venv/bin/rapport stack status                what runs where
  tail -f {log_file}

Stop it:  make demo-stop  (traffic)   ·   make stack-down  (Kafka and Redis)
""",
        soft_wrap=True,
    )
