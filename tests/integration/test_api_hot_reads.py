"""The hot read path (services/api/hot_reads.py) answers exactly what the FastAPI routes answer.

Two `rapport api` processes serve the same namespace, one with the hot path and one without
(``api.hot_reads=false``: the routes answer everything); the same requests go to both and the answers must be
equal — status, body, the headers a client acts on. The profiles' events lie in the future, so every read is
computed at the profile's last event whatever the clock says, and the two answers can be compared exactly
(only ``computed_at`` differs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from profiles.state import ProfileState
from services.settings import Settings
from tests.api_support import create_key, running_api, store_simulated_profiles

pytestmark = pytest.mark.timeout(300)
FUTURE = datetime(2031, 3, 1, tzinfo=UTC)
ORIGIN = "https://shop.example"


@dataclass
class Servers:
    hot: str
    routes: str
    tokens: dict[str, str]
    states: list[ProfileState]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, settings: Settings, local_stack: object) -> Iterator[Servers]:
    namespace = f"hot-{uuid.uuid4().hex[:8]}"
    states = store_simulated_profiles(settings, namespace, 60, days=10, start=FUTURE)
    env = {
        **os.environ,
        "RAPPORT_REDIS__URL": settings.redis.url,
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RAPPORT_PROFILE__NAMESPACE": namespace,
    }
    tokens = {
        "reader": create_key(env, "--name", "hot-r", "--scopes", "profiles:read,scores:read", "--rate-limit", "1e6"),
        "events_only": create_key(env, "--name", "hot-e", "--scopes", "events:write"),
        "scores_only": create_key(env, "--name", "hot-s", "--scopes", "scores:read", "--rate-limit", "1e6"),
        "revoked": create_key(env, "--name", "hot-v", "--scopes", "profiles:read"),
        "page": create_key(env, "--name", "hot-p", "--scopes", "scores:read", "--publishable", "--origin", ORIGIN),
        "slow page": create_key(
            env, "--name", "hot-q", "--scopes", "scores:read", "--publishable", "--origin", ORIGIN, "--rate-limit", "1"
        ),
    }
    revoked_id = tokens["revoked"].split("_")[2]
    subprocess.run([sys.executable, "-m", "services.cli.main", "keys", "revoke", revoked_id], env=env, check=True)
    logs = tmp_path_factory.mktemp("hot-api")
    with (
        running_api(env, logs / "hot.log") as hot,
        running_api({**env, "RAPPORT_API__HOT_READS": "false"}, logs / "routes.log") as routes,
    ):
        yield Servers(hot, routes, tokens, states)


def _comparable(response: httpx.Response) -> dict[str, Any]:
    """Status, body and the headers a client acts on; without the instants of computation."""
    body = response.json()
    body.get("meta", {}).pop("computed_at", None)
    for score in body.get("scores", {}).values():
        score.pop("computed_at", None)
    headers = {name: response.headers.get(name) for name in ("content-type", "retry-after", "www-authenticate")}
    return {"status": response.status_code, "body": body, "headers": headers}


def _get(base: str, path: str, token: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{base}{path}", headers=headers, timeout=30)


def test_the_hot_path_answers_what_the_routes_answer(servers: Servers) -> None:
    customers = [s for s in servers.states if s.customer_id == s.profile_id][:15]
    visitors = [s for s in servers.states if s.customer_id is None][:5]
    assert customers, "the simulation must give customers"
    assert visitors, "and anonymous visitors"
    ids = [s.profile_id for s in customers]
    ids += [next(iter(s.anonymous_ids)) for s in customers if s.anonymous_ids][:5]  # linked anonymous ids
    ids += [next(iter(s.emails)) for s in customers if s.emails][:5]
    ids += [s.profile_id for s in visitors]
    ids += ["nobody-knows-me"]
    reader = servers.tokens["reader"]
    requests: list[tuple[str, str | None]] = []
    for any_id in ids:
        requests += [
            (f"/v1/profiles/{any_id}", reader),
            (f"/v1/profiles/{any_id}/scores", reader),
            (f"/v1/profiles/{any_id}?fields=rfm,windows", reader),
        ]
    some = ids[0]
    requests += [
        (f"/v1/profiles/{some}?fields=nonsense", reader),  # 422 from the route
        (f"/v1/profiles/{some}?fields=meta", reader),
        (f"/v1/profiles/{some}?as_of=2031-03-20T00:00:00Z", reader),  # the route's as_of
        (f"/v1/profiles/{some}?as_of=2020-01-01T00:00:00Z", reader),  # before the last event: 422
        (f"/v1/profiles/{some}/scores?fields=rfm", reader),  # not a scores parameter: the route ignores it
        (f"/v1/profiles/{some}", None),
        (f"/v1/profiles/{some}", "rk_sec_nothex_short"),
        (f"/v1/profiles/{some}", servers.tokens["events_only"]),
        (f"/v1/profiles/{some}", servers.tokens["revoked"]),
        (f"/v1/profiles/{some}", servers.tokens["scores_only"]),
        (f"/v1/profiles/{some}/scores", servers.tokens["scores_only"]),
        (f"/v1/profiles/{'x' * 257}", reader),
    ]
    before = _hot_reads(servers.hot)
    for path, token in requests:
        hot, routes = _get(servers.hot, path, token), _get(servers.routes, path, token)
        assert _comparable(hot) == _comparable(routes), path
    # Every plain read by the reader (`fields=meta` included) and the scores-only key's scores read took the hot
    # path; nothing else did.
    assert _hot_reads(servers.hot) - before == 3 * len(ids) + 2
    assert _hot_reads(servers.routes) == 0


def test_the_hot_path_answers_a_page_as_the_routes_do(servers: Servers) -> None:
    """Publishable keys from a page: a repeated ``Origin`` and a rate-limited call. Until session 40 the hot path
    read the last ``Origin`` where the route reads the first (``evil, allowed``: 200 with the allowed origin
    against the route's 403), and its 429 carried ``Access-Control-Allow-Origin`` where the route's did not."""
    path = f"/v1/profiles/{servers.states[0].profile_id}/scores"

    def asked(base: str, token: str, origins: list[str]) -> tuple[int, str | None]:
        headers = [("Authorization", f"Bearer {token}"), *(("Origin", o) for o in origins)]
        answer = httpx.get(f"{base}{path}", headers=headers, timeout=30)
        return answer.status_code, answer.headers.get("access-control-allow-origin")

    for origins in ([ORIGIN], ["https://evil.example", ORIGIN], [ORIGIN, "https://evil.example"]):
        hot, routes = (
            asked(servers.hot, servers.tokens["page"], origins),
            asked(servers.routes, servers.tokens["page"], origins),
        )
        assert hot == routes, origins
    assert asked(servers.hot, servers.tokens["page"], [ORIGIN]) == (200, ORIGIN)
    for base in (servers.hot, servers.routes):
        answers = [asked(base, servers.tokens["slow page"], [ORIGIN]) for _ in range(4)]
        assert (429, None) in answers, (base, answers)
        assert {a for a in answers if a[0] == 429} == {(429, None)}, (base, answers)


def _hot_reads(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "rapport_http_hot_reads"
        for sample in family.samples
        if sample.name == "rapport_http_hot_reads_total"
    )


def test_the_hot_path_counts_against_the_rate_limit_like_the_route(servers: Servers, settings: Settings) -> None:
    env = {
        **os.environ,
        "RAPPORT_REDIS__URL": settings.redis.url,
        "RAPPORT_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
    }
    some = servers.states[0].profile_id
    for base in (servers.hot, servers.routes):
        # One request per second, no burst: the second of two back-to-back requests is refused.
        slow = create_key(env, "--name", "hot-slow", "--scopes", "profiles:read", "--rate-limit", "1")
        first, second = _get(base, f"/v1/profiles/{some}", slow), _get(base, f"/v1/profiles/{some}", slow)
        assert first.status_code == 200, base
        assert second.status_code == 429, base
        assert second.json()["error"]["code"] == "rate_limited"
        assert second.headers["retry-after"] == "1"
