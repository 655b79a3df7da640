"""``rapport namespace list | hash | check | diff | promote | drop`` (docs/replay.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import msgspec
import typer
from kafka.errors import KafkaError
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from profiles.namespaces import Namespaces, NamespaceStateError
from profiles.segments import SegmentChange
from schemas.topics import SEGMENT_CHANGES, full_name
from services.cli.names import namespace_name
from services.cli.on_redis import run_on_redis
from services.kafka_clients import make_producer
from services.namespace_ops import (
    check_namespace,
    diff_namespaces,
    hash_namespace,
    profile_counts,
    promotion_announcements,
    running_writers,
)
from services.redis_lock import running_holder
from services.settings import Settings, get_settings
from services.webhooks.store import WebhookStore

app = typer.Typer(help="Namespaces: live and replayed profile sets; compare, promote, drop.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(metavar="NAME", callback=namespace_name)]


@app.command("list")
def list_namespaces() -> None:
    """Known namespaces: profiles, replay state, which one the API serves, and which were replaced by a
    promotion (their workers publish no segment change)."""
    default = get_settings().profile.namespace

    async def read(
        redis: Redis,
    ) -> tuple[str, set[str], list[tuple[str, int, dict[str, object] | None, str | None]]]:
        namespaces = Namespaces(redis)
        dropping = await namespaces.dropping()
        names = sorted({*await namespaces.known(), *dropping, default})
        counts = await profile_counts(redis, names)
        rows = [(n, counts[n], await namespaces.checkpoint(n), await namespaces.superseded_by(n)) for n in names]
        return await namespaces.serving(default), dropping, rows

    serving, dropping, rows = run_on_redis(read)
    table = Table("namespace", "serving", "profiles", "replay", "replaced by", "dropping")
    for name, profiles, checkpoint, replaced_by in rows:
        replay = "-" if checkpoint is None else ("done" if checkpoint["done"] else "unfinished")
        unfinished_drop = "unfinished" if name in dropping else ""
        table.add_row(
            name, "yes" if name == serving else "", f"{profiles:,}", replay, replaced_by or "", unfinished_drop
        )
    Console().print(table)


@app.command("hash")
def hash_(name: NameArg) -> None:
    """The canonical snapshot hash of a namespace: order-independent, over every profile's canonical view
    and every segment's members. Equal hashes mean the same customers with the same figures."""
    config = get_settings().profile.fold_config()
    result = run_on_redis(lambda redis: hash_namespace(redis, name, config))
    typer.echo(f"{result.digest}  {name} ({result.profiles:,} profiles, {result.segments} segments)")


@app.command("check")
def check(name: NameArg) -> None:
    """The keys of a namespace that do not decode (damaged by hand or by a restore): every profile and segment
    definition, each with why. Exit 1 if there is one (docs/streams.md, "Unreadable profiles")."""
    result = run_on_redis(lambda redis: check_namespace(redis, name))
    for pid, reason in result.unreadable_profiles.items():
        typer.echo(f"profile {pid}: {reason}")
    for segment, reason in result.unreadable_segments.items():
        typer.echo(f"segment {segment}: {reason}")
    bad = len(result.unreadable_profiles) + len(result.unreadable_segments)
    typer.echo(
        f"{name}: {result.profiles:,} profiles, {len(result.unreadable_profiles):,} unreadable; "
        f"{len(result.unreadable_segments)} unreadable segment definitions"
    )
    if bad:
        raise typer.Exit(1)


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(metavar="A", callback=namespace_name)],
    b: Annotated[str, typer.Argument(metavar="B", callback=namespace_name)],
) -> None:
    """How two namespaces differ: profiles only in one, differing profiles per field (with examples), and
    segment memberships. Exit 1 if they differ."""
    config = get_settings().profile.fold_config()
    result = run_on_redis(lambda redis: diff_namespaces(redis, a, b, config))
    typer.echo(f"compared {result.compared:,} profiles present in both: {result.differing:,} differ")
    typer.echo(f"only in {a}: {len(result.only_in_a):,} {result.only_in_a[:3]}")
    typer.echo(f"only in {b}: {len(result.only_in_b):,} {result.only_in_b[:3]}")
    if result.fields:
        table = Table("field", "profiles", "examples")
        for path, count in result.fields.most_common():
            table.add_row(path, f"{count:,}", ", ".join(result.examples[path]))
        Console().print(table)
    for segment, (left, right, examples) in result.segments.items():
        typer.echo(f"segment {segment}: {left:,} members only in {a}, {right:,} only in {b}, e.g. {examples}")
    if not result.same:
        raise typer.Exit(1)


@app.command("promote")
def promote(
    name: NameArg,
    announce: Annotated[
        bool,
        typer.Option(
            help="Publish to segments.changes how NAME's memberships differ from the served namespace's, "
            "before switching (nothing is switched if that fails)."
        ),
    ] = True,
) -> None:
    """Serve NAME from the API (configured with the current `profile.namespace`) from now on: one atomic
    switch; API processes see it within `api.serving_refresh_s`. Subscribers first hear what changes in the
    segments' memberships (docs/replay.md)."""
    settings = get_settings()
    configured = settings.profile.namespace

    async def plan(redis: Redis) -> tuple[str, list[SegmentChange]]:
        namespaces = Namespaces(redis)
        if name not in await namespaces.known() and name != configured:
            raise typer.BadParameter(f"no namespace {name!r} (see `rapport namespace list`)")
        # Before announcing anything; the switch checks again, in its transaction.
        await _promotable(namespaces, name)
        served = await namespaces.serving(configured)
        if not announce or served == name:
            return served, []
        return served, await promotion_announcements(redis, settings, served, name, int(time.time() * 1000))

    served, changes = run_on_redis(plan)
    if changes:
        try:
            _publish(settings, changes)
        except KafkaError as exc:
            typer.echo(f"could not announce the membership changes ({exc}); {served!r} is still served", err=True)
            raise typer.Exit(1) from exc
    previous = run_on_redis(lambda redis: _switch(Namespaces(redis), configured, name))
    entered = sum(c.change == "entered" for c in changes)
    typer.echo(
        f"serving {name!r} (was {previous or configured!r}); announced {entered:,} entries and "
        f"{len(changes) - entered:,} exits"
    )


async def _promotable(namespaces: Namespaces, name: str) -> None:
    try:
        await namespaces.refuse_unpromotable(name)
    except NamespaceStateError as exc:
        typer.echo(f"rapport: {exc}", err=True)
        raise typer.Exit(1) from None


async def _switch(namespaces: Namespaces, configured: str, name: str) -> str | None:
    try:
        return await namespaces.promote(configured, name)
    except NamespaceStateError as exc:  # since the announcements: they described a switch that did not happen
        typer.echo(f"rapport: {exc}; the membership changes announced for it did not happen", err=True)
        raise typer.Exit(1) from None


def _publish(settings: Settings, changes: list[SegmentChange]) -> None:
    """Every change, acknowledged by the broker (keyed by profile, like the workers' changes)."""
    topic = full_name(SEGMENT_CHANGES, settings.kafka.topic_prefix)
    producer = make_producer(settings)
    try:
        sent = [producer.send(topic, key=c.customer_id.encode(), value=msgspec.json.encode(c)) for c in changes]
        producer.flush()
        for future in sent:
            future.get(timeout=30)
    finally:
        producer.close()


@app.command("drop")
def drop(name: NameArg, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Delete every key of a namespace, a batch at a time (SCAN + UNLINK: Redis is never blocked). The
    namespace the API serves cannot be dropped, nor one that running processes write; a namespace an API is
    configured with keeps its webhook registrations."""
    settings = get_settings()
    default = settings.profile.namespace

    async def run(redis: Redis) -> int:
        replaying = await running_holder(redis, Namespaces.replay_lock_key(name))
        if replaying is not None:
            # Its next chunk would write keys behind the drop's SCAN (it stops there, seeing the drop).
            typer.echo(f"rapport: a replay into {name!r} is running ({replaying}): stop it first", err=True)
            raise typer.Exit(1)
        namespaces = Namespaces(redis)
        try:
            marked = await namespaces.begin_drop(default, name)
        except NamespaceStateError as exc:
            typer.echo(f"rapport: {exc}", err=True)
            raise typer.Exit(1) from None
        # An API configured with this namespace serves another since a promotion, and still reads its webhook
        # registrations there (docs/replay.md): they stay, and so may its deliverers.
        serving_instead = await namespaces.serves_another(name)
        keep = WebhookStore(redis, name).holds if serving_instead else None
        # A running worker, trainer or deliverer would write keys behind the SCAN, and the namespace would come
        # back half-made. Asked after marking: one that joins its group from now on sees the mark and stops.
        try:
            writers = await asyncio.to_thread(running_writers, settings, name, webhooks=not serving_instead)
        except BaseException as exc:
            if marked:  # nothing was deleted: a drop given up here is no unfinished drop
                await namespaces.call_off_drop(name)
            if not isinstance(exc, KafkaError):
                raise
            typer.echo(f"rapport: cannot tell whether processes write {name!r} ({exc}): retry", err=True)
            raise typer.Exit(1) from None
        if writers:
            if marked:
                await namespaces.call_off_drop(name)
            running = ", ".join(f"{group}: {members}" for group, members in sorted(writers.items()))
            typer.echo(f"rapport: {name!r} is written by running processes ({running}): stop them first", err=True)
            raise typer.Exit(1)
        deleted = 0
        async for deleted in namespaces.finish_drop(name, keep=keep):  # noqa: B007 - the last count is the total
            pass
        if serving_instead:
            typer.echo(f"kept {name!r}'s webhook registrations: an API configured with it serves {serving_instead!r}")
        return deleted

    if not yes:
        typer.confirm(f"delete every key of namespace {name!r}?", abort=True)
    dropped = run_on_redis(run, f"the drop of {name!r} was interrupted: the same command finishes it")
    typer.echo(f"dropped {name!r}: {dropped:,} keys")
