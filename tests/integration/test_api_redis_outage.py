"""The API while Redis is down: each route that needs Redis answers 503 ``redis_unavailable`` with
``Retry-After``, never a 500 and never a wrong 401 or 404 (API keys live in Redis too); ``/healthz`` stays up,
``/readyz`` says which dependency failed; the same requests get the same answers again once Redis is back.
With the hot read path (the default) and without it.

A Redis of the test's own, killed and restarted from its AOF."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api_support import create_key, running_api, store_simulated_profiles
from tests.kafka_support import Topics
from tests.redis_support import private_redis

pytestmark = pytest.mark.integration


def requests(known: str) -> list[tuple[str, str, object]]:
    """(method, path, JSON body): reads of a stored profile and of an unknown one, batches, scores, segments,
    an erasure receipt."""
    return [
        ("GET", f"/v1/profiles/{known}", None),
        ("GET", "/v1/profiles/c-nobody", None),
        ("GET", f"/v1/profiles/{known}?fields=rfm", None),
        ("POST", "/v1/profiles/batch", {"ids": [known, "c-nobody"]}),
        ("GET", f"/v1/profiles/{known}/segments", None),
        ("GET", f"/v1/profiles/{known}/scores", None),
        ("POST", "/v1/scores/batch", {"ids": [known]}),
        ("GET", "/v1/segments", None),
        ("GET", "/v1/erasures/no-such-receipt", None),
    ]


@pytest.mark.parametrize("hot_reads", ["true", "false"])
def test_the_api_answers_503_while_redis_is_down_and_serves_again_after(
    topics: Topics, tmp_path: Path, hot_reads: str
) -> None:
    with private_redis(topics, tmp_path) as (redis, private):
        known = store_simulated_profiles(private.settings, private.settings.profile.namespace, 5)[0].profile_id
        asked = requests(known)
        key = create_key(private.env, "--name", "outage", "--scopes", "profiles:read,scores:read,segments:admin,admin")
        headers = {"Authorization": f"Bearer {key}"}
        env = {**private.env, "RAPPORT_API__HOT_READS": hot_reads}
        with running_api(env, tmp_path / "api.log") as base, httpx.Client(base_url=base, timeout=10) as http:

            def answers() -> list[httpx.Response]:
                return [http.request(method, path, json=body, headers=headers) for method, path, body in asked]

            before = [_gist(r) for r in answers()]
            assert [code for code, _ in before] == [200, 404, 200, 200, 200, 200, 200, 200, 422], before
            assert http.get("/readyz").status_code == 200

            redis.kill()
            for (method, path, _), answer in zip(asked, answers(), strict=True):
                assert answer.status_code == 503, (method, path, answer.status_code, answer.text)
                assert answer.json()["error"]["code"] == "redis_unavailable", (method, path, answer.text)
                assert answer.headers["retry-after"] == "1", (method, path)
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "redis" in ready.text.lower(), ready.text

            redis.start()
            assert [_gist(r) for r in answers()] == before
            assert http.get("/readyz").status_code == 200


def _gist(response: httpx.Response) -> tuple[int, object]:
    """The status and what the answer is about: the profile read, the batch's ids, the error's code (the
    figures of a profile read as of now move with the clock)."""
    body = response.json()
    if response.status_code >= 400:
        return response.status_code, body["error"]["code"]
    if isinstance(body, dict) and "results" in body:
        return response.status_code, [result.get("id") for result in body["results"]]
    return response.status_code, body.get("profile_id") if isinstance(body, dict) else None
