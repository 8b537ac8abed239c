"""Every operation of the OpenAPI schema, fuzzed with schemathesis (random and malformed
paths, queries and bodies, with a valid admin key): never a 5xx, every answer matches its
documented schema, and a request that is refused (4xx) leaves the event store exactly as
it was: no event recorded."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.harness import Platform

EXAMPLES = int(os.environ.get("GOMOBILE_FUZZ_EXAMPLES", "8"))  # more locally: GOMOBILE_FUZZ_EXAMPLES=200


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("fuzz")) / "var", start_dispatcher=False)
    yield p
    p.close()


def _max_id(p: Platform) -> tuple[int, int]:
    c = p.container
    return (c.campaigns.recorder.max_notification_id() or 0, c.calls.recorder.max_notification_id() or 0)


def _fuzz(platform: Platform, key: str, op: Any, problems: dict[str, list[str]]) -> None:
    name = f"{op.method.upper()} {op.path}"

    @given(op.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)  # the same examples every run: CI must not turn red at random
    def run(case: Any) -> None:
        before = _max_id(platform)
        response = case.call(base_url=platform.base_url, headers={"x-api-key": key}, timeout=30)
        for check in (not_a_server_error, response_schema_conformance):
            try:
                case.validate_response(response, checks=[check])
            except FailureGroup as exc:  # collected, and reported all at once below
                problems[name].append("; ".join(f"{type(e).__name__}: {str(e)[:200]}" for e in exc.exceptions))
        if 400 <= response.status_code < 500 and _max_id(platform) != before:
            problems[name].append(f"{response.status_code} but events were recorded: {response.text[:200]}")

    run()


def test_no_operation_answers_5xx_or_changes_state_on_a_refused_request(platform: Platform) -> None:
    _, key = platform.new_org("Fuzz Org")
    schema = schemathesis.openapi.from_url(platform.base_url + "/docs/openapi.json")
    problems: dict[str, list[str]] = collections.defaultdict(list)
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.startswith(("/webhooks", "/twilio")):
            continue  # Twilio's callbacks are signed: covered by the webhook tests
        operations += 1
        _fuzz(platform, key, op, problems)
    assert operations > 50, operations
    assert not problems, "\n".join(f"{k}: {v[0]} (x{len(v)})" for k, v in problems.items())
