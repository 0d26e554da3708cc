"""Transient API failures: which errors a pass retries, how long it waits, and that it requeues itself."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3
from kubernetes import utils
from kubernetes.client.rest import ApiException

from dstj_operator import apierrors, handlers


def _answer(status: int, retry_after: str | None = None, body: dict[str, Any] | None = None) -> ApiException:
    e = ApiException(status=status, reason="Too Many Requests" if status == 429 else "Error")
    e.headers = urllib3.HTTPHeaderDict({"Retry-After": retry_after} if retry_after else {})
    e.body = json.dumps(body or {"kind": "Status", "message": "too many requests, please try again later"})
    return e


@pytest.mark.parametrize(("error", "transient"), [
    pytest.param(_answer(429, "1"), True, id="throttled"),
    pytest.param(_answer(503), True, id="server-unavailable"),
    pytest.param(urllib3.exceptions.MaxRetryError(None, "/api", "too many 429 error responses"), True,
                 id="urllib3-gave-up-its-own-retries"),
    pytest.param(urllib3.exceptions.ProtocolError("connection reset"), True, id="connection-dropped"),
    pytest.param(ConnectionRefusedError(), True, id="connection-refused"),
    pytest.param(utils.FailToCreateError([_answer(429, "2")]), True, id="a-create-throttled"),
    pytest.param(_answer(403), False, id="forbidden-is-the-users-to-fix"),
    pytest.param(_answer(422), False, id="invalid"),
    pytest.param(KeyError("bug"), False, id="a-bug-of-ours"),
])
def test_throttling_and_lost_connections_are_transient_and_refusals_are_not(error: BaseException,
                                                                             transient: bool) -> None:
    assert apierrors.is_transient(error) is transient


def test_the_retry_waits_at_least_what_the_server_asked() -> None:
    assert apierrors.retry_delay(_answer(429, "7"), failures=1, jitter=0) == 7.0
    body = {"kind": "Status", "details": {"retryAfterSeconds": 3}}
    assert apierrors.retry_delay(_answer(429, body=body), failures=1, jitter=0) == 3.0


def test_the_retry_backs_off_exponentially_to_a_cap_with_jitter_on_top() -> None:
    delays = [apierrors.retry_delay(_answer(503), failures=n, jitter=0) for n in (1, 2, 3, 20)]
    assert delays == [apierrors.BACKOFF_BASE_S, 2 * apierrors.BACKOFF_BASE_S, 4 * apierrors.BACKOFF_BASE_S,
                      apierrors.BACKOFF_CAP_S]
    assert apierrors.retry_delay(_answer(429, "2"), failures=1, jitter=1) == 3.0


class _Later:
    def __init__(self) -> None:
        self.asked: list[tuple[tuple[str, str], float]] = []

    def after(self, key: tuple[str, str], seconds: float) -> None:
        self.asked.append((key, seconds))


def _passes_answering(monkeypatch: pytest.MonkeyPatch, answers: list[ApiException | None]) -> _Later:
    """Make each pass raise the next answer (None: the pass succeeds); return what it asks to requeue."""
    later = _Later()
    monkeypatch.setattr(handlers, "_requeue", lambda: later)

    def pass_(namespace: str, name: str) -> None:
        if (e := answers.pop(0)) is not None:
            raise e

    monkeypatch.setattr(handlers, "_sync_locked", pass_)
    return later


def test_a_pass_throttled_with_429_requeues_itself_after_the_servers_retry_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    later = _passes_answering(monkeypatch, [_answer(429, "4"), _answer(429, "4"), None])
    handlers.sync("ns", "job")
    handlers.sync("ns", "job")
    assert [k for k, _ in later.asked] == [("ns", "job")] * 2
    assert all(4.0 <= s <= 6.0 for _, s in later.asked), later.asked
    assert handlers._transient_failures[("ns", "job")] == 2
    handlers.sync("ns", "job")  # succeeds: the count of failures in a row starts again
    assert ("ns", "job") not in handlers._transient_failures


def test_a_pass_failing_on_a_bug_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_requeue", _Later)

    def pass_(namespace: str, name: str) -> None:
        raise KeyError("status")

    monkeypatch.setattr(handlers, "_sync_locked", pass_)
    with pytest.raises(KeyError):
        handlers.sync("ns", "bug")


@pytest.mark.parametrize(("error", "refusal"), [
    pytest.param(_answer(403), True, id="forbidden-until-the-authorizer-or-an-admin-allows-it"),
    pytest.param(_answer(422), True, id="invalid"),
    pytest.param(_answer(404), False, id="the-job-is-gone"),
    pytest.param(_answer(410), False, id="expired"),
    pytest.param(_answer(429, "1"), False, id="throttled-is-transient-not-a-refusal"),
    pytest.param(KeyError("bug"), False, id="a-bug-of-ours"),
])
def test_refusals_that_may_pass_later_are_told_from_gone_objects_and_bugs(error: BaseException,
                                                                          refusal: bool) -> None:
    assert apierrors.is_refusal(error) is refusal


def test_a_pass_refused_with_403_requeues_itself_with_backoff_and_one_on_a_gone_job_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A restarted API server answers 403 until its authorizer has read the RBAC objects again: no event may
    # come to trigger another pass, so the refused one must ask for its own.
    later = _passes_answering(monkeypatch, [_answer(403), _answer(403), None])
    handlers.sync("ns", "refused")
    handlers.sync("ns", "refused")
    delays = [s for k, s in later.asked if k == ("ns", "refused")]
    assert len(delays) == 2 and delays[0] < delays[1] <= apierrors.BACKOFF_CAP_S * 2, delays
    handlers.sync("ns", "refused")
    assert ("ns", "refused") not in handlers._transient_failures

    def gone(namespace: str, name: str) -> None:
        raise _answer(404)

    monkeypatch.setattr(handlers, "_sync_locked", gone)
    with pytest.raises(ApiException):
        handlers.sync("ns", "gone")
    assert all(k != ("ns", "gone") for k, _ in later.asked)
