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
from services.webhooks.store import Pause, Webhook, WebhookStore

#: The reason a rewind gives its pause: a webhook left paused by an interrupted rewind says so.
REWINDING = "rewinding (rapport webhooks rewind): resume it if that command was interrupted"

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
    """Move a webhook's position in segments.changes (docs/segments.md). The webhook is paused meanwhile (the
    deliverers stop its part within webhooks.refresh_s), then resumed unless it was paused already."""
    at_ms = instant_ms(to, "--to", "earliest")
    settings = get_settings()
    namespace = settings.profile.namespace  # where the API registers webhooks, whichever it serves

    async def find(redis: Redis) -> tuple[Webhook, Pause | None] | None:
        return await WebhookStore(redis, namespace).get(webhook_id)

    found = run_on_redis(find)
    if found is None:
        typer.echo(f"rapport: no webhook {webhook_id!r} in namespace {namespace!r}", err=True)
        raise typer.Exit(1)
    if not yes:
        what = "skip every change not yet sent to" if to == "now" else f"send the changes from {to} again to"
        typer.confirm(f"{what} webhook {webhook_id!r}?", abort=True)
    paused_here = found[1] is None
    if paused_here:
        run_on_redis(lambda redis: WebhookStore(redis, namespace).pause(webhook_id, REWINDING))
    try:
        # The deliverers see the pause within refresh_s, then stop its part (a request in flight included).
        wait_s = 2 * settings.webhooks.refresh_s + settings.webhooks.timeout_s + 10.0
        done = rewind(settings, namespace, webhook_id, at_ms, wait_s=wait_s)
    except (DeliverersRunningError, RewindRefusedError) as exc:
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if paused_here:
            run_on_redis(lambda redis: WebhookStore(redis, namespace).resume(webhook_id))
    typer.echo(
        f"webhook {webhook_id!r} ({done.group}): next deliveries from {to}; "
        f"{done.held:,} changes held from there (each sent if the webhook wants its segment)"
    )
