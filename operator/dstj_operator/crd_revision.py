"""Which revision of the CRD this operator was built with, and the refusal to run against an older one.

Helm installs a chart's `crds/` once and never upgrades them, so after `helm upgrade` a newer
operator can meet the previous CRD: its new spec fields pruned by the API server, its new status
fields dropped, its new CEL rules missing. It must not run then; it exits at start (code 2) with
the command that fixes it.

The decision: the generated CRD carries the annotation `training.deepseek.dev/crd-revision: "<n>"`,
an integer bumped by hand with every change of the generated CRD (schema, rules, printer columns,
subresources). An integer, not a hash, because "older" needs an order: an operator accepts its own
revision and any later one (the CRD is applied before the operator in an upgrade, so for a moment
an older operator runs against the newer CRD) and refuses an earlier one. A CRD without the
annotation predates this check: revision 0. `tests/unit/test_crd_revision.py` keeps the digest of
the CRD each revision was cut at, so a change of the CRD without a bump fails there.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.rest import ApiException

from dstj_api.contract import GROUP, PLURAL

CRD_REVISION = 1
"""This operator's CRD revision: bump it with every change of the generated CRD (see the module doc)."""
REVISION_ANNOTATION = f"{GROUP}/crd-revision"
CRD_NAME = f"{PLURAL}.{GROUP}"
APPLY_CRDS = "kubectl apply --server-side -f crds/"
log = logging.getLogger(__name__)


def installed_revision(crd: dict[str, Any]) -> int:
    """The revision an installed CRD object declares (0: no annotation, from before revisions existed)."""
    raw = ((crd.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def refusal(installed: int | None, own: int = CRD_REVISION) -> str | None:
    """Why the operator must not start against a CRD of revision `installed` (None: not installed), or None."""
    if installed is None:
        return (f"the CustomResourceDefinition {CRD_NAME} is not installed; install it with `{APPLY_CRDS}` "
                "(or charts/deepseek-operator/crds/) before starting the operator")
    if installed < own:
        return (f"the installed CustomResourceDefinition {CRD_NAME} is revision {installed}, older than this "
                f"operator's revision {own} (annotation {REVISION_ANNOTATION}); Helm never upgrades crds/: apply "
                f"the new one with `{APPLY_CRDS}` (or charts/deepseek-operator/crds/), then start the operator")
    return None


def check_installed_crd(api: Any) -> str | None:
    """Read the installed CRD through `api` (an ApiextensionsV1Api) and return the refusal, or None.

    Without permission to read it (RBAC granted by hand without `get` on this CRD), the check is
    skipped with a warning rather than stopping an operator that may well be fine.
    """
    try:
        crd = api.api_client.sanitize_for_serialization(api.read_custom_resource_definition(CRD_NAME))
    except ApiException as e:
        if e.status == 404:
            return refusal(None)
        if e.status == 403:
            log.warning("cannot read the CRD %s to check its revision (grant `get` on it): %s", CRD_NAME, e.reason)
            return None
        raise
    return refusal(installed_revision(crd))
