"""Time arithmetic shared by the policies: ages of RFC 3339 stamps, measured against a given `now`."""

from __future__ import annotations

from datetime import UTC, datetime


def age(when: str | datetime | None, now: datetime) -> float | None:
    """Seconds from `when` (an RFC 3339 stamp or a datetime) to `now` (None when unset)."""
    if not when:
        return None
    then = when if isinstance(when, datetime) else datetime.fromisoformat(when.replace("Z", "+00:00"))
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (now - then).total_seconds()
