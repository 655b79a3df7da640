"""schemathesis, every phase (examples, coverage, fuzzing, stateful), against the running API with a key
that may call every route: no server error and no response outside the documented schema."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.api_support import create_key, running_api
from tests.kafka_support import Topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path, topics: Topics) -> None:
    env = {**topics.env, "RAPPORT_PROFILE__NAMESPACE": f"fuzz-{uuid.uuid4().hex[:6]}", "RAPPORT_API__KEY_CACHE_S": "0"}
    token = create_key(env, "--name", "fuzz", "--scopes", "admin", "--rate-limit", "100000")
    with running_api(env, tmp_path / "api.log") as base:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{base}/openapi.json",
                # An event stream never ends by design; test_api.py covers it (events, filter, resume, 4xx).
                "--exclude-path",
                "/v1/segment-changes",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                "40",
                "--seed",
                "1",
                # One worker: with two, hypothesis once crashed inside schemathesis describing a lambda (a
                # runtime error of the tool, 0 failures of the API) — not reproducible, so not worth the risk.
                "--workers",
                "1",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=800,
            cwd=tmp_path,  # schemathesis keeps its state (.schemathesis/) in the working directory
        )
    summary = run.stdout[-20000:]
    assert run.returncode == 0, (
        f"{summary}\n{run.stderr[-2000:]}\napi log: {(tmp_path / 'api.log').read_text()[-3000:]}"
    )
    assert "No issues found" in run.stdout or " passed" in run.stdout, summary
