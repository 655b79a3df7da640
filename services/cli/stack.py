"""``rapport stack up | down | status``: the local Kafka + Redis stack, without Docker."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from deploy.localstack import LocalStack, NodeState, NodeStatus, StackError
from services.settings import Settings

app = typer.Typer(
    help="Run Kafka (KRaft) and Redis locally on 127.0.0.1; state, data and logs live in the stack state dir.",
    no_args_is_help=True,
)

console = Console()

_STATE_STYLE = {
    NodeState.RUNNING: "[green]running[/]",
    NodeState.STARTING: "[yellow]starting[/]",
    NodeState.EXTERNAL: "[cyan]external[/]",
    NodeState.STOPPED: "[dim]stopped[/]",
}
_OWNER = {
    NodeState.RUNNING: "us (pid file)",
    NodeState.STARTING: "us (pid file)",
    NodeState.EXTERNAL: "not us; left alone",
    NodeState.STOPPED: "-",
}


def _stack() -> LocalStack:
    # Settings are read here, not at import, so tests and callers can point the CLI elsewhere via env.
    return LocalStack(Settings())


def _show_progress() -> None:
    """Route the stack manager's progress messages (fetching jars, formatting, starting) to the terminal."""
    logger = logging.getLogger("deploy.localstack")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_path=False, show_time=False))
    logger.setLevel(logging.INFO)


def _fail(error: StackError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {error}", soft_wrap=True, highlight=False)
    return typer.Exit(1)


def _print_status(stack: LocalStack, statuses: Iterable[NodeStatus]) -> None:
    statuses = list(statuses)
    console.print(f"[bold]state dir[/] {stack.state_dir}", soft_wrap=True, highlight=False)
    table = Table()
    table.add_column("service", style="bold")
    table.add_column("state")
    table.add_column("started by")
    table.add_column("pid", justify="right")
    table.add_column("address")
    for status in statuses:
        pid = str(status.pid) if status.pid is not None else "-"
        table.add_row(status.name, _STATE_STYLE[status.state], _OWNER[status.state], pid, status.address)
    console.print(table)
    # Paths are printed as plain lines (not table cells) so they are never truncated and can be copied.
    for status in statuses:
        console.print(f"[bold]{status.name}[/] dir:  {status.node_dir}", soft_wrap=True, highlight=False)
        for path in status.log_files:
            console.print(f"{' ' * len(status.name)} log:  {path}", soft_wrap=True, highlight=False)


@app.command()
def up() -> None:
    """Start Kafka and Redis, or reuse them if they already run; returns once both answer."""
    _show_progress()
    stack = _stack()
    try:
        with console.status("Starting the local stack..."):
            outcomes = stack.up()
    except StackError as error:
        raise _fail(error) from error
    for name, outcome in outcomes.items():
        console.print(f"{name}: {outcome.value}")
    _print_status(stack, stack.status())


@app.command()
def down() -> None:
    """Stop the processes `up` started (PID files); data and logs stay, external servers are untouched."""
    _show_progress()
    stack = _stack()
    external = [status.name for status in stack.status() if status.state is NodeState.EXTERNAL]
    try:
        stopped = stack.down()
    except StackError as error:
        raise _fail(error) from error
    for name, pid in stopped.items():
        if pid is not None:
            console.print(f"{name}: stopped pid {pid}")
        elif name in external:
            console.print(f"{name}: not started by us; left running")
        else:
            console.print(f"{name}: was not running")


@app.command()
def status() -> None:
    """Show what runs where: state, pid, address, state dir and log files."""
    stack = _stack()
    _print_status(stack, stack.status())
