"""The base of every model users or components write: camelCase on the wire, unknown fields refused.

One component reading what the other wrote uses `dstj_api.lenient.read_lenient` instead, which drops
unknown fields: a newer writer must not stall an older reader.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """camelCase aliases (the Kubernetes convention), snake_case accepted too; typos are errors."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )
