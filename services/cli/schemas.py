"""``rapport schemas export``: write the contract's JSON Schema files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.export import JSON_DIR, write_schemas

app = typer.Typer(help="The event contract as JSON Schema.", no_args_is_help=True)


@app.command("export")
def export(out: Annotated[Path, typer.Option(help="Directory to write into.")] = JSON_DIR) -> None:
    """Write one JSON Schema per event type, and one for any event."""
    try:
        written = write_schemas(out)
    except OSError as exc:
        raise typer.BadParameter(f"{exc.filename}: {exc.strerror}", param_hint="--out") from exc
    for path in written:
        typer.echo(path)
