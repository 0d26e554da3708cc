"""spec.suspend: checkpoint and remove the workers; false again brings them back (Kueue's contract).

Suspending publishes a `suspended` generation that hands off from the running one, so the group may
commit the checkpoint it takes while stopping: nothing is lost. The job is Suspended only once every
worker is gone: until then they are writing their final checkpoint.
"""

from __future__ import annotations

from dstj_api import Membership


def membership(current: Membership | None, endpoint: str) -> Membership | None:
    """The suspended generation to publish, or None when it is already published."""
    if current is not None and current.state == "suspended":
        return None
    return Membership(generation=current.generation + 1 if current else 0, world_size=0, state="suspended",
                      rdzv_endpoint=endpoint, handoff_from=current.generation if current else None)
