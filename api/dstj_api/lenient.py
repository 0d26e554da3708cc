"""Reading what the other side wrote: unknown fields are dropped (and logged at debug level), not refused.

The wire models forbid unknown fields, so a user's typo is an error. What one component reads from
the other is different: a newer operator may publish a membership or render a trainer config with
a field the running trainer does not know yet, and a newer trainer may report one the operator does
not know. Refusing it would stall or crash-loop the older side for a field it has no use for, so
the reading side parses with `read_lenient`. What users write (the job spec, a `--config` file)
stays strict. Only unknown fields are forgiven: a known field with a bad value is still an error.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_snake

from dstj_api.errors import field_path

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_MAX_ROUNDS = 8
"""Passes of drop-and-revalidate: one per nesting level a before-validator may hide (a preset merge)."""


def _drop(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Remove the key at `loc` from nested dicts and lists; False when the path is not there as written.

    A model's before-validator may rename keys (the preset merge turns camelCase into snake_case), so a
    key is also matched by its snake_case form.
    """
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node) or last:
                return False
            node = node[part]
            continue
        if not isinstance(node, dict):
            return False
        key = part if part in node else next((k for k in node if isinstance(k, str) and to_snake(k) == part), None)
        if key is None:
            return False
        if last:
            del node[key]
            return True
        node = node[key]
    return False


def read_lenient(model: type[M], data: Any, what: str) -> M:
    """`model.model_validate(data)`, except that unknown fields anywhere in `data` are dropped and logged.

    `what` names the source in the log line ("membership", "progress report", ...). Raises the
    ValidationError of the remaining problems, if any, as a strict parse of the pruned data would.
    """
    return read_lenient_naming(model, data, what)[0]


def read_lenient_naming(model: type[M], data: Any, what: str) -> tuple[M, list[str]]:
    """`read_lenient`, and the fields it dropped (as users write them), for callers that report them."""
    pruned, dropped = data, []
    for _ in range(_MAX_ROUNDS):
        try:
            result = model.model_validate(pruned)
        except ValidationError as e:
            extras = [tuple(err["loc"]) for err in e.errors() if err["type"] == "extra_forbidden"]
            if not extras:
                raise
            if pruned is data:
                pruned = copy.deepcopy(data)  # never change the caller's object
            removed = [loc for loc in extras if _drop(pruned, loc)]
            if not removed:
                raise
            dropped += [field_path(loc) for loc in removed]
            continue
        if dropped:
            log.debug("%s: ignoring fields this version does not know (written by a newer one?): %s",
                      what, ", ".join(dropped))
        return result, dropped
    return model.model_validate(pruned), dropped  # raises: unknown fields kept appearing
