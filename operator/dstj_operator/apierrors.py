"""API errors as the job's Synced condition: the API server's reason and message, never only a log line.

Transient failures (the API server throttling this client with 429, a 5xx, a dropped or refused
connection) are not the job's fault and say nothing about it: the pass is retried after a backoff that
honours the server's Retry-After (`retry_delay`), and only a job that keeps failing records them.
"""

from __future__ import annotations

import json
import random
from typing import Any

import urllib3
from kubernetes import utils
from kubernetes.client.rest import ApiException

from dstj_operator import conditions

_REASONS = {403: conditions.FORBIDDEN, 422: conditions.INVALID, 409: conditions.CONFLICT,
            429: conditions.TOO_MANY_REQUESTS}


def _first(e: BaseException) -> ApiException | None:
    if isinstance(e, ApiException):
        return e
    if isinstance(e, utils.FailToCreateError):
        found = [x for x in e.api_exceptions if getattr(x, "status", None) != 409] or e.api_exceptions
        return found[0] if found else None
    return None


def is_api_error(e: BaseException) -> bool:
    """Whether `e` is an error the API server answered (as opposed to a bug of ours)."""
    return _first(e) is not None


def describe(e: BaseException) -> tuple[str, str]:
    """(condition reason, message quoting the API server) for an API error."""
    api = _first(e)
    if api is None:
        return conditions.API_ERROR, str(e)
    message = api.reason or ""
    body: Any = None
    try:
        body = json.loads(api.body) if api.body else None
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        message = str(body["message"])
    return _REASONS.get(api.status or 0, conditions.API_ERROR), f"the API server answered {api.status}: {message}"


TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "not this": throttled (429), or the server briefly unable to serve."""
BACKOFF_BASE_S = 0.5
"""The first retry's delay when the server names none; doubled per failure in a row."""
BACKOFF_CAP_S = 60.0
"""The longest delay between two retries of a pass: a throttled fleet still converges within a minute of relief."""


def is_transient(e: BaseException) -> bool:
    """Whether `e` is a failure to retry later: throttled, a 5xx, or no answer at all (connection, timeout).

    The client's own retries end in urllib3 errors, not ApiException: GETs, PUTs and DELETEs answered 429
    with a Retry-After are retried by urllib3 itself (three times, sleeping what the server asked) and
    then raise MaxRetryError; a refused connection does the same."""
    api = _first(e)
    if api is not None:
        return (api.status or 0) in TRANSIENT_STATUSES or not api.status
    return isinstance(e, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def is_refusal(e: BaseException) -> bool:
    """Whether `e` is the API server refusing a request that may pass later (403, 409, 422...), not saying the
    object is gone (404, 410). A refusal can heal without an event to trigger another pass: a restarted API
    server answers 403 until its authorizer has read the RBAC objects again, an administrator fixes a Role.
    The pass retries it with the same capped backoff as a transient failure (as controller-runtime requeues
    every error); what the pass could report, it already put in a condition."""
    api = _first(e)
    return api is not None and (api.status or 0) not in (404, 410) and not is_transient(e)


def cause(e: BaseException) -> str:
    """A transient failure's kind, for the retries metric: the HTTP status, or "connection" without one."""
    api = _first(e)
    return str(api.status) if api is not None and api.status else "connection"


def server_retry_after(e: BaseException) -> float | None:
    """Seconds the API server asked the client to wait (Retry-After, or the Status' retryAfterSeconds)."""
    api = _first(e)
    if api is None:
        return None
    header = api.headers.get("Retry-After") if api.headers is not None else None
    try:
        if header:
            return float(header)
        body = json.loads(api.body) if api.body else None
        seconds = ((body or {}).get("details") or {}).get("retryAfterSeconds") if isinstance(body, dict) else None
        return float(seconds) if seconds else None
    except (TypeError, ValueError):
        return None


def retry_delay(e: BaseException, failures: int, jitter: float | None = None) -> float:
    """Seconds before retrying a pass that failed transiently `failures` times in a row.

    Exponential from BACKOFF_BASE_S to BACKOFF_CAP_S, never shorter than the server's Retry-After, plus up
    to half again at random (`jitter` in [0, 1] pins it): jobs throttled together retry apart, not in one
    burst that is throttled again."""
    delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, failures - 1))
    delay = max(delay, server_retry_after(e) or 0.0)
    return delay * (1 + 0.5 * (random.random() if jitter is None else jitter))


def retry_after(failures: int) -> float:
    """Seconds before retrying a pass that failed on an API error `failures` times in a row."""
    return float(min(300, 2 ** max(0, failures - 1)))
