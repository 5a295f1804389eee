"""How `make interop` reads the suite's checks: a pass needs evidence, and a failure says why."""

from __future__ import annotations

from interop.conformance import REQUIRED, Outcome, judge


def check(status: str, **extra: str) -> dict[str, str]:
    return {"id": "c", "name": "C", "description": "a check", "status": status, **extra}


def test_a_scenario_passes_when_something_succeeded_and_nothing_failed() -> None:
    assert judge("initialize", [check("INFO"), check("SUCCESS"), check("WARNING")]).passed


def test_a_single_failure_fails_the_scenario_with_its_message() -> None:
    outcome = judge("x", [check("SUCCESS"), check("FAILURE", errorMessage="Field missing"), check("FAILURE")])
    assert not outcome.passed
    assert outcome.why == "Field missing (+1 more)"


def test_only_informational_checks_are_not_a_pass() -> None:
    assert judge("x", [check("INFO"), check("INFO")]) == Outcome("x", False, "no check succeeded")


def test_no_checks_at_all_quote_what_the_client_said() -> None:
    outcome = judge("x", [], "scenario: x\nconnection failed: refused\n")
    assert not outcome.passed
    assert outcome.why == "no checks recorded; client said: connection failed: refused"
    assert "no checks recorded" in judge("x", {"not": "a list"}).why


def test_lines_say_pass_fail_and_whether_the_failure_counts() -> None:
    assert Outcome("initialize", True).line(required=True) == "initialize: PASS"
    assert Outcome("sse-retry", False, "late").line(required=True) == "sse-retry: FAIL (late)"
    assert (
        Outcome("auth/x", False, "no token").line(required=False)
        == "auth/x: FAIL (not required yet: no token)"
    )


def test_the_scenarios_of_issues_16_and_17_are_the_required_ones() -> None:
    client = ("initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults")
    authorization = {
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/basic-cimd",
        "auth/pre-registration",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/resource-mismatch",
        "auth/2025-03-26-oauth-metadata-backcompat",
        "auth/2025-03-26-oauth-endpoint-fallback",
        "auth/client-credentials-basic",
        "auth/client-credentials-jwt",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/cross-app-access-complete-flow",
    }
    assert REQUIRED[:4] == client
    assert set(REQUIRED[4:]) == authorization
    assert len(REQUIRED) == len(client) + len(authorization)
