"""User-facing errors for bad configuration: every line names the field, the value and the fix."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic.alias_generators import to_camel


class ConfigError(ValueError):
    """A configuration a user wrote is invalid; the message says which field and how to fix it."""


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a user writes the field: `model.moe.topK`, `members[2]`."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            # Users write camelCase (the Kubernetes convention); show the field as they would write it.
            parts.append(("." if parts else "") + to_camel(item))
    return "".join(parts) or "(root)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render a pydantic error as one line per problem: `source: field.path: message (got value)`."""
    lines = [f"{source}: {err.error_count()} problem(s):"]
    for e in err.errors(include_url=False):
        loc = field_path(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        got = e.get("input")
        shown = repr(got) if not isinstance(got, dict) else "{...}"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        lines.append(f"  {loc}: {msg} (got {shown})")
    return "\n".join(lines)
