"""``rapport eval`` end to end on a small simulation: the real simulator, broker, worker and progressive
learning; the table printed; nothing left behind (topics, namespace, the simulated history)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from services.redis_client import make_redis
from services.topics_admin import admin_client
from tests.kafka_support import Topics, rapport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_the_evaluation_prints_each_model_beside_its_oracle_and_leaves_nothing_behind(
    topics: Topics, tmp_path: Path
) -> None:
    # 30 days: no 90-day CLV horizon ends, and churn's 30-day horizons end too late for the lag.
    done = rapport(
        "eval", "--customers", "100", "--days", "30", "--warmup", "0", "--rate", "0", "--no-write-docs",
        env={**topics.env, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        cells[0]: cells[1:]
        for line in done.stdout.splitlines()
        if line.startswith("│") and (cells := [cell.strip() for cell in line.split("│")[1:-1]])
    }
    assert set(rows) == {"purchase_propensity", "email_open"}, done.stdout
    for metric, examples, model, recency, base_rate, oracle, ratio in rows.values():
        assert metric == "ROC AUC"
        assert int(examples.replace(",", "")) > 50
        assert all(0 <= float(v) <= 1 for v in (model, recency, base_rate, oracle))
        assert float(ratio) == pytest.approx(float(model) / float(oracle), abs=0.002)

    assert list(tmp_path.iterdir()) == [], "the simulated history was left behind"
    found = re.search(r"namespace (eval-[0-9a-f]+)\)", done.stdout)
    assert found is not None, done.stdout
    assert asyncio.run(_keys(topics, found[1])) == []
    with admin_client(topics.settings) as admin:
        left = [t for t in admin.list_topics() if t.startswith(f"{topics.settings.kafka.topic_prefix}eval-")]
    assert left == []


async def _keys(topics: Topics, namespace: str) -> list[bytes]:
    redis = make_redis(topics.settings)
    try:
        return [key async for key in redis.scan_iter(match=f"rapport:{namespace}:*")]
    finally:
        await redis.aclose()
