"""``rapport webhooks rewind``: a webhook's changes sent again from an instant (its receiver lost them, or the
changes it dead-lettered while it was broken are wanted after all), or skipped up to now."""

from __future__ import annotations

from typing import Annotated

import typer
from redis.asyncio import Redis

from services.cli.instants import instant_ms
from services.cli.on_redis import run_on_redis
from services.settings import get_settings
from services.webhooks.rewind import DeliverersRunningError, RewindRefusedError, rewind
from services.webhooks.store import WebhookStore

app = typer.Typer(help="Webhook deliveries (registrations are made through the API).", no_args_is_help=True)


@app.command("rewind")
def rewind_(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id (wh_…).")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="RFC 3339 instant: send again every change written from then on; 'earliest': "
            "every change the topic holds; 'now': skip every change not yet sent.",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Move a webhook's position in segments.changes, with the deliverers stopped (docs/segments.md)."""
    at_ms = instant_ms(to, "--to", "earliest")
    settings = get_settings()
    namespace = settings.profile.namespace  # where the API registers webhooks, whichever it serves

    async def registered(redis: Redis) -> bool:
        return await WebhookStore(redis, namespace).get(webhook_id) is not None

    if not run_on_redis(registered):
        typer.echo(f"rapport: no webhook {webhook_id!r} in namespace {namespace!r}", err=True)
        raise typer.Exit(1)
    if not yes:
        what = "skip every change not yet sent to" if to == "now" else f"send the changes from {to} again to"
        typer.confirm(f"{what} webhook {webhook_id!r}?", abort=True)
    try:
        done = rewind(settings, namespace, webhook_id, at_ms)
    except (DeliverersRunningError, RewindRefusedError) as exc:
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"webhook {webhook_id!r} ({done.group}): next deliveries from {to}; "
        f"{done.held:,} changes held from there (each sent if the webhook wants its segment)"
    )
