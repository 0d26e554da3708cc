"""`python -m dstj_operator`: run the operator (all namespaces) with kopf."""

from __future__ import annotations

import sys

import kopf

import dstj_operator.handlers  # noqa: F401 - registers the handlers


def main() -> int:
    """Run until interrupted; a standby with a lower priority takes over if this one stops."""
    kopf.configure(verbose=False)
    kopf.run(clusterwide=True, standalone=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
