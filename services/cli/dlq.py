"""``rapport dlq summary | redrive``: what the dead-letter topic holds, and sending it back once fixed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from services.cli.instants import instant_ms
from services.cli.on_redis import run_on_redis
from services.dlq import NOT_RESENT, redrive, summary
from services.settings import get_settings
from streams.dead_letters import REASONS

app = typer.Typer(help="The dead-letter topic: what it holds, and re-sending it once fixed.", no_args_is_help=True)
T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="One JSON document on stdout, for machines.")]
Since = Annotated[
    str,
    typer.Option(
        "--since", help="Only the dead letters refused at or after this RFC 3339 instant (default: all retained)."
    ),
]


def _run(action: Callable[[Redis], Awaitable[T]]) -> T:
    async def answered(redis: Redis) -> T:
        try:
            return await action(redis)
        except LookupError as missing:  # the topic does not exist: nothing was ever dead-lettered here
            raise typer.BadParameter(str(missing)) from None

    # An interrupted redrive re-sends nothing twice: the next one finds what this one sent.
    return run_on_redis(answered)


def _reason(value: str) -> str:
    if value not in REASONS:
        raise typer.BadParameter(f"unknown reason {value!r}; the reasons are: {', '.join(REASONS)}")
    if value in NOT_RESENT:
        raise typer.BadParameter(
            f"{value} dead letters are not re-sent: no worker could have written them. Their raw records are "
            "still in the raw topics; `rapport replay` rebuilds a namespace from them"
        )
    return value


@app.command("summary")
def summary_(since: Since = "earliest", as_json: AsJson = False) -> None:
    """Dead letters by reason and source topic: how many, how many re-sent, first and last refusal."""
    since_ms = instant_ms(since, "--since", "earliest")
    settings = get_settings()
    rows: list[dict[str, Any]] = _run(lambda redis: summary(settings, redis, since_ms))
    if as_json:
        typer.echo(orjson.dumps(rows).decode())
        return
    table = Table("reason", "source topic", "records", "re-sent", "first refused", "last refused")
    for row in rows:
        table.add_row(
            row["reason"],
            row["topic"] or "-",
            f"{row['records']:,}",
            f"{row['re_sent']:,}",
            row.get("first_rejected_at", "-"),
            row.get("last_rejected_at", "-"),
        )
    Console().print(table)


@app.command("redrive")
def redrive_(
    reason: Annotated[str, typer.Argument(help="The reason code of the dead letters to re-send.", callback=_reason)],
    dry_run: Annotated[bool, typer.Option(help="Say what would be re-sent; send nothing.")] = False,
    since: Since = "earliest",
    as_json: AsJson = False,
) -> None:
    """Send the dead letters of REASON back to their raw topics, once their cause is fixed (a rate for a
    currency, a higher size limit, a fixed defect; for fold_error, the raw event the record carries): only
    those the current settings admit, each at most once across runs and interruptions (docs/events.md,
    "Dead letters")."""
    since_ms = instant_ms(since, "--since", "earliest")
    settings = get_settings()
    done = _run(lambda redis: redrive(settings, redis, reason, datetime.now(UTC), dry_run=dry_run, since_ms=since_ms))
    report = done.as_json() | {"dry_run": dry_run}
    if as_json:
        typer.echo(orjson.dumps(report).decode())
        return
    verb = "would re-send" if dry_run else "re-sent"
    by_topic = ", ".join(f"{topic} {n:,}" for topic, n in sorted(done.sent.items())) or "nothing"
    typer.echo(f"{reason}: {verb} {report['sent']:,} ({by_topic})")
    if done.refused_again:
        again = ", ".join(f"{why} {n:,}" for why, n in done.refused_again.most_common())
        typer.echo(f"  left in place, the current settings refuse them again: {again}")
    if done.already_sent:
        typer.echo(f"  re-sent before: {done.already_sent:,}")
    if done.forgotten:
        recreated = "the dead-letter topic was deleted and created again"
        typer.echo(f"  {recreated}: forgot the {done.forgotten:,} positions re-sent from the old one")
    if done.recovered:
        typer.echo(f"  found sent by an interrupted redrive: {done.recovered:,}")
    if done.not_resendable:
        typer.echo(f"  nothing to send back (a hand-over, an erasure, no source named): {done.not_resendable:,}")
