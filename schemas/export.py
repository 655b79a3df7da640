"""JSON Schema documents of the event contract, for producers written in other languages.

The files under ``schemas/json/`` are generated from the pydantic models by ``rapport schemas export``;
a unit test fails when they drift from the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import TypeAdapter

from schemas.events import MODEL_BY_TYPE, Event

JSON_DIR: Final = Path(__file__).parent / "json"
_BASE_URI: Final = "https://rapport.dev/schemas/v1/"


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema: one per event type and one for any event (a union on ``type``)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, model in MODEL_BY_TYPE.items():
        out[f"{kind}.schema.json"] = _with_id(model.model_json_schema(mode="validation"), f"{kind}.schema.json")
    union = TypeAdapter(Event).json_schema(mode="validation")
    union["title"] = "Event"
    out["event.schema.json"] = _with_id(union, "event.schema.json")
    return out


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in event_schemas().items():
        path = directory / name
        path.write_bytes(render(schema))
        written.append(path)
    return written


def _with_id(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _BASE_URI + name, **schema}
