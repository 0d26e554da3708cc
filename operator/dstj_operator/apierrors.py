"""API errors as the job's Synced condition: the API server's reason and message, never only a log line."""

from __future__ import annotations

import json
from typing import Any

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


def retry_after(failures: int) -> float:
    """Seconds before retrying a pass that failed on an API error `failures` times in a row."""
    return float(min(300, 2 ** max(0, failures - 1)))
