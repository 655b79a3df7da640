"""``rapport topics …``: the topic catalogue on a broker."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from schemas.topics import CATALOGUE, full_name
from services.settings import get_settings
from services.topics_admin import TopicState, ensure_topics

app = typer.Typer(help="Kafka topics of the catalogue.", no_args_is_help=True)


@app.command("create")
def create() -> None:
    """Create missing catalogue topics (idempotent); report existing topics that differ from the catalogue.

    Exits 1 if a topic's partition count or cleanup policy is not the catalogue's (a deployment should stop
    there: docs/topics.md); a different retention is reported, and exits 0."""
    settings = get_settings()
    reports = ensure_topics(settings)
    table = Table("topic", "state", "partitions", "differences")
    colours = {
        TopicState.CREATED: "green",
        TopicState.OK: "dim",
        TopicState.DIFFERS: "yellow",
        TopicState.CONFLICTS: "bold red",
    }
    for report in reports:
        colour = colours[report.state]
        table.add_row(
            report.name, f"[{colour}]{report.state}[/]", str(report.partitions), "; ".join(report.differences)
        )
    Console().print(table)
    conflicting = [report.name for report in reports if report.state is TopicState.CONFLICTS]
    if conflicting:
        typer.echo(
            f"rapport: {', '.join(conflicting)}: partitions or cleanup policy differ from the catalogue; Rapport "
            "would misplace or lose records there (docs/topics.md)",
            err=True,
        )
        raise typer.Exit(1)


@app.command("list")
def list_() -> None:
    """Print the catalogue: name, partitions, retention, cleanup policy and key."""
    settings = get_settings()
    table = Table("topic", "partitions", "retention", "cleanup", "key", "purpose")
    for spec in CATALOGUE:
        retention = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000} d"
        table.add_row(
            full_name(spec, settings.kafka.topic_prefix),
            str(spec.partition_count(settings.kafka.event_partitions)),
            retention,
            spec.cleanup.value,
            spec.key,
            spec.description,
        )
    Console().print(table)
