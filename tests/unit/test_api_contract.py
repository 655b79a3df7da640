"""The OpenAPI document promises what the routes answer: every route that takes an API key documents the
answers any such route may give (no key, wrong scope, rate limited, and 503 while Redis, which holds the keys and
the limits, is down: tests/integration/test_api_redis_outage.py)."""

from __future__ import annotations

from services.api.app import create_app
from services.settings import Settings

AUTHENTICATED = {"401", "403", "429", "503"}


def test_every_route_that_takes_a_key_documents_what_any_such_route_may_answer() -> None:
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]
    checked = 0
    for path, operations in paths.items():
        for method, operation in operations.items():
            documented = set(operation.get("responses", {}))
            if "401" not in documented:
                continue
            checked += 1
            assert documented >= AUTHENTICATED, (method, path, sorted(AUTHENTICATED - documented))
            for status in AUTHENTICATED:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert checked >= 20, checked  # every /v1 route
