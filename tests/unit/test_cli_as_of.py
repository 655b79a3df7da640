"""``rapport profile get`` and ``rapport scores get`` refuse an ``--as-of`` their answer could not write, in one
line and exit 2, instead of a traceback. The reads are replaced by what they do with the instant (render
the profile, score at it), so that no Redis is needed and the refusal must come before them."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from profiles.config import FoldConfig
from profiles.models.scoring import Score
from profiles.read import ScoresRead
from profiles.state import new_profile
from profiles.store import ProfileStore
from profiles.view import render
from services.cli import profile, scores
from services.cli.main import app

#: Year 10000 in UTC; the other, year 0.
UNWRITABLE = ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"]


async def _rendered(_: ProfileStore, any_id: str, config: FoldConfig, *, as_of_ms: int | None, now_ms: int) -> Any:
    return render(new_profile(any_id, any_id), now_ms if as_of_ms is None else as_of_ms, config)


async def _scored(any_id: str, as_of_ms: int | None) -> ScoresRead:
    at = 0 if as_of_ms is None else as_of_ms
    return ScoresRead(any_id, {"churn_risk": Score(0.5, "churn_risk", None, at, at, cold_start=True)})


@pytest.fixture(autouse=True)
def _reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile, "read_profile", _rendered)
    monkeypatch.setattr(scores, "_read", _scored)


@pytest.mark.parametrize("as_of", UNWRITABLE)
@pytest.mark.parametrize("command", ["profile", "scores"])
def test_an_as_of_no_answer_can_write_is_a_one_line_usage_error(command: str, as_of: str) -> None:
    result = CliRunner().invoke(app, [command, "get", "c-1", "--as-of", as_of])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.splitlines() == [
        f"rapport: --as-of {as_of} is outside the instants a profile can show, "
        "0001-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["profile", "scores"])
def test_the_first_and_last_instants_an_answer_can_write_are_served_in_rfc_3339(command: str) -> None:
    """Both ends, with four-digit years (strftime's ``%Y`` wrote year 1 as ``1``)."""
    for given, shown in [
        ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999+00:00", "9999-12-31T23:59:59.999Z"),
    ]:
        result = CliRunner().invoke(app, [command, "get", "c-1", "--as-of", given])
        assert result.exit_code == 0, (result.output, result.exception)
        assert f'"as_of": "{shown}"' in result.stdout
