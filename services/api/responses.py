"""The API's JSON response class: orjson (FastAPI's own ORJSONResponse is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JsonResponse(JSONResponse):
    """A ``JSONResponse`` (so that OpenAPI documents the route's response model) rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
