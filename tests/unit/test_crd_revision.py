"""The CRD revision: carried by the generated CRD, bumped with every change of it, and the operator's
refusal to start against an older one (Helm never upgrades `crds/`)."""

from __future__ import annotations

import hashlib
import json

import pytest

from dstj_operator.crd import build_crd
from dstj_operator.crd_revision import APPLY_CRDS, CRD_REVISION, REVISION_ANNOTATION, installed_revision, refusal

#: The digest of the generated CRD each revision was cut at. A change of the CRD (schema, rules, columns)
#: without a new revision fails below: bump CRD_REVISION in dstj_operator/crd_revision.py and add a line.
#: (Revision 1 is the first with the annotation; its digest moved with issue 12's own CRD changes before
#: any release carried it. From the first release on, a change is a new revision, never a new digest.)
DIGESTS = {
    1: "63a96e48d80e512b",
}


def crd_digest() -> str:
    """A digest of the generated CRD, its revision annotation left out."""
    crd = build_crd()
    crd["metadata"]["annotations"].pop(REVISION_ANNOTATION)
    return hashlib.sha256(json.dumps(crd, sort_keys=True).encode()).hexdigest()[:16]


def test_the_generated_crd_carries_its_revision() -> None:
    assert build_crd()["metadata"]["annotations"][REVISION_ANNOTATION] == str(CRD_REVISION)


def test_every_change_of_the_crd_bumps_its_revision() -> None:
    digest = crd_digest()
    assert DIGESTS.get(CRD_REVISION) == digest, (
        f"the generated CRD changed (digest {digest}) but CRD_REVISION is still {CRD_REVISION}: set CRD_REVISION = "
        f"{max(DIGESTS) + 1} in dstj_operator/crd_revision.py and add {{{max(DIGESTS) + 1}: {digest!r}}} to DIGESTS "
        f"here (an operator refuses to start against an older revision)")
    assert len(set(DIGESTS.values())) == len(DIGESTS) and max(DIGESTS) == CRD_REVISION


@pytest.mark.parametrize(("annotations", "revision"), [
    pytest.param({REVISION_ANNOTATION: "3"}, 3, id="annotated"),
    pytest.param({}, 0, id="from-before-revisions"),
    pytest.param(None, 0, id="no-annotations-at-all"),
    pytest.param({REVISION_ANNOTATION: "three"}, 0, id="unreadable-counts-as-oldest"),
])
def test_the_installed_revision_is_read_from_the_annotation(annotations: dict[str, str] | None, revision: int) -> None:
    assert installed_revision({"metadata": {"name": "x", "annotations": annotations}}) == revision


@pytest.mark.parametrize(("installed", "own", "refused"), [
    pytest.param(2, 2, False, id="the-same-revision-runs"),
    pytest.param(3, 2, False, id="a-newer-crd-runs-an-upgrade-applies-the-crd-first"),
    pytest.param(1, 2, True, id="an-older-crd-is-refused"),
    pytest.param(0, 1, True, id="a-crd-from-before-revisions-is-refused"),
])
def test_an_operator_refuses_only_an_older_crd(installed: int, own: int, refused: bool) -> None:
    message = refusal(installed, own)
    assert (message is not None) == refused
    if message is not None:
        assert APPLY_CRDS in message and f"revision {installed}, older than this operator's revision {own}" in message


def test_a_missing_crd_is_refused_with_the_command_that_installs_it() -> None:
    message = refusal(None)
    assert message is not None and "is not installed" in message and APPLY_CRDS in message
