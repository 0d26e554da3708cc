"""Command line: ``python -m localcluster build|up|down|status``.

``up`` prints the admin kubeconfig path on stdout and progress on stderr, so
``export KUBECONFIG=$(python -m localcluster up)`` works in a shell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localcluster import build, controlplane
from localcluster.state import StateDir, default_state_dir


def _parser() -> argparse.ArgumentParser:
    """Build the argument parser (one subcommand per verb)."""
    p = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    p.add_argument("--state", type=Path, default=None,
                   help="state directory (default: $LOCALCLUSTER_STATE or "
                        "${DSTJ_CACHE:-~/.cache/dstj}/localcluster/state)")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or find cached) binaries; print their directory")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("up", help="start the control plane (idempotent); print the admin kubeconfig path")
    d = sub.add_parser("down", help="stop every process started and delete the state directory")
    d.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    sub.add_parser("status", help="show each component's pid and health, and the kubeconfig path")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return the process exit code."""
    args = _parser().parse_args(argv)
    sd = StateDir(args.state.absolute() if args.state else default_state_dir())
    try:
        if args.cmd == "build":
            print(build.bin_dir(force=args.force))
        elif args.cmd == "up":
            print(controlplane.up(sd))
        elif args.cmd == "down":
            controlplane.down(sd, grace=args.grace)
        elif args.cmd == "status":
            return _status(sd)
    except (build.BuildError, RuntimeError, TimeoutError) as e:
        print(f"localcluster {args.cmd}: error: {e}", file=sys.stderr)
        return 1
    return 0


def _status(sd: StateDir) -> int:
    """Print a table of components; exit 0 only if all are alive and healthy."""
    rows = controlplane.status(sd)
    print(f"{'COMPONENT':<26}{'PID':>8}  {'ALIVE':<6} HEALTHY")
    for name, pid, alive, healthy in rows:
        yes_alive, yes_healthy = ("yes" if alive else "no"), ("yes" if healthy else "no")
        print(f"{name:<26}{pid if pid else '-':>8}  {yes_alive:<6} {yes_healthy}")
    kc = sd.admin_kubeconfig
    print(f"kubeconfig: {kc if kc.is_file() else '(none: run up)'}")
    return 0 if all(h for *_, h in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
