"""``rapport webhooks list | pause | resume | rewind``: the registered webhooks and whether they are paused;
pausing and resuming their deliveries; a webhook's changes sent again from an instant (its receiver lost them,
or the changes it dead-lettered while it was broken are wanted after all), or skipped up to now. The same
registrations as ``/v1/webhooks``, for an operator with the deployment's settings and no API key."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from profiles.timeutil import iso
from services.cli.instants import instant_ms
from services.cli.on_redis import run_on_redis
from services.settings import get_settings
from services.webhooks.rewind import DeliverersRunningError, RewindRefusedError, rewind
from services.webhooks.store import WebhookStore

#: The reason a rewind gives its pause: a webhook left paused by an interrupted rewind says so.
REWINDING = "rewinding (rapport webhooks rewind): resume it if that command was interrupted"

#: The reason ``rapport webhooks pause`` gives.
PAUSED_HERE = "paused from the command line (rapport webhooks pause)"

app = typer.Typer(help="Webhook deliveries (registrations are made through the API).", no_args_is_help=True)
WebhookId = Annotated[str, typer.Argument(help="The webhook's id (wh_…).")]


def _store(redis: Redis) -> WebhookStore:
    return WebhookStore(redis, get_settings().profile.namespace)  # where the API registers, whichever it serves


@app.command("list")
def list_() -> None:
    """Every webhook: its URL, segments, and whether (since when, why) its deliveries are paused."""
    table = Table("id", "url", "segments", "created", "paused")
    for hook, pause in run_on_redis(lambda redis: _store(redis).all()):
        paused = "" if pause is None else f"{iso(pause.at_ms)}: {pause.reason}"
        table.add_row(hook.webhook_id, hook.url, ", ".join(hook.segments) or "(all)", iso(hook.created_at_ms), paused)
    Console().print(table)


@app.command("pause")
def pause(webhook_id: WebhookId) -> None:
    """Stop a webhook's deliveries (the deliverers follow within webhooks.refresh_s); exit 1 if there is none."""
    if not run_on_redis(lambda redis: _store(redis).pause(webhook_id, PAUSED_HERE)):
        _unknown(webhook_id)
    typer.echo(f"webhook {webhook_id!r} paused: its changes wait in segments.changes until it is resumed")


@app.command("resume")
def resume(webhook_id: WebhookId) -> None:
    """Start a paused webhook's deliveries again, from the first change not delivered; exit 1 if there is none."""
    if run_on_redis(lambda redis: _store(redis).get(webhook_id)) is None:
        _unknown(webhook_id)
    was_paused = run_on_redis(lambda redis: _store(redis).resume(webhook_id))
    typer.echo(f"webhook {webhook_id!r} {'resumed' if was_paused else 'was not paused'}")


def _unknown(webhook_id: str) -> NoReturn:
    typer.echo(f"rapport: no webhook {webhook_id!r} in namespace {get_settings().profile.namespace!r}", err=True)
    raise typer.Exit(1)


@app.command("rewind")
def rewind_(
    webhook_id: WebhookId,
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
    deliverers stop its part within webhooks.refresh_s), then resumed, unless it was paused already or someone
    paused or resumed it meanwhile."""
    at_ms = instant_ms(to, "--to", "earliest")
    settings = get_settings()
    namespace = settings.profile.namespace  # where the API registers webhooks, whichever it serves

    found = run_on_redis(lambda redis: _store(redis).get(webhook_id))
    if found is None:
        _unknown(webhook_id)
    if not yes:
        what = "skip every change not yet sent to" if to == "now" else f"send the changes from {to} again to"
        typer.confirm(f"{what} webhook {webhook_id!r}?", abort=True)
    held = None if found[1] is not None else run_on_redis(lambda redis: _store(redis).hold(webhook_id, REWINDING))
    try:
        # The deliverers see the pause within refresh_s, then stop its part (a request in flight included).
        wait_s = 2 * settings.webhooks.refresh_s + settings.webhooks.timeout_s + 10.0
        done = rewind(settings, namespace, webhook_id, at_ms, wait_s=wait_s)
    except (DeliverersRunningError, RewindRefusedError) as exc:
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if held is not None and not run_on_redis(lambda redis: _store(redis).release(webhook_id, held)):
            typer.echo(f"webhook {webhook_id!r} was paused or resumed meanwhile: left as that was done", err=True)
    typer.echo(
        f"webhook {webhook_id!r} ({done.group}): next deliveries from {to}; "
        f"{done.held:,} changes held from there (each sent if the webhook wants its segment)"
    )
