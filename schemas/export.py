"""JSON Schema documents of the event contract, for producers written in other languages.

The files under ``schemas/json/`` (the events, and the profile view) are generated from the msgspec
structs by ``rapport schemas export``;
a unit test fails when they drift from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from schemas.events import MODEL_BY_TYPE, AnyEvent, IdentifyEvent
from schemas.profile import ProfileView

JSON_DIR: Final = Path(__file__).parent / "json"
_BASE_URI: Final = "https://rapport.dev/schemas/v1/"
# Enforced by the validator after decoding; stated here for producers' own validators.
_ONE_ID_REQUIRED: Final = {
    "anyOf": [
        {"required": [field], "properties": {field: {"type": "string"}}} for field in ("customer_id", "anonymous_id")
    ]
}


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (draft 2020-12): one per event type, one for any event, one for the profile."""
    out = {f"{kind}.schema.json": _document(model, f"{kind}.schema.json") for kind, model in MODEL_BY_TYPE.items()}
    out["event.schema.json"] = _document(AnyEvent, "event.schema.json", title="Event")
    out["profile.schema.json"] = _document(ProfileView, "profile.schema.json", title="Profile")
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


def _document(kind: object, name: str, title: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(kind)
    identify = IdentifyEvent.__name__
    for def_name, definition in schema.get("$defs", {}).items():
        if def_name in {m.__name__ for m in MODEL_BY_TYPE.values()} and def_name != identify:
            definition.update(_ONE_ID_REQUIRED)
    head: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _BASE_URI + name}
    if title:
        head["title"] = title
    return {**head, **schema}
