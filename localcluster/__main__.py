"""Command line: ``python -m localcluster build|up|down|status|node ...``.

``up`` prints the admin kubeconfig path on stdout and progress on stderr, so
``export KUBECONFIG=$(python -m localcluster up)`` works in a shell. ``node kill|reclaim|add|
remove|list`` fail and manage process nodes (see ``nodes.py`` and ``faults.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localcluster import build, controlplane, fakenodes, nodes, realnodes
from localcluster.nodes import NodeSize
from localcluster.state import StateDir, default_state_dir, session_lock


def _parser() -> argparse.ArgumentParser:
    """Build the argument parser (one subcommand per verb)."""
    p = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    p.add_argument("--state", type=Path, default=None,
                   help="state directory (default: $LOCALCLUSTER_STATE or "
                        "${DSTJ_CACHE:-~/.cache/dstj}/localcluster/state)")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or find cached) binaries; print their directory")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--kwok", action="store_true", help="build (or find) kwok instead, for --fake-nodes")
    b.add_argument("--node", action="store_true", help="the real-node binaries (kubelet, containerd, ...)")
    u = sub.add_parser("up", help="start the control plane and nodes (idempotent); print the admin kubeconfig path")
    u.add_argument("--nodes", type=int, default=3, help="process nodes to keep running (0: none; default 3)")
    u.add_argument("--real-nodes", type=int, default=0,
                   help="real nodes (kubelet + containerd + runc) to keep running (default 0); they report "
                        "the machine's own CPU and memory")
    u.add_argument("--fake-nodes", type=int, default=0,
                   help="simulated nodes to keep (kwok: pods go Pending -> Running -> Ready, nothing runs; "
                        "builds kwok on first use; default 0)")
    u.add_argument("--fake-nodes-untainted", action="store_true",
                   help=f"register new fake nodes without the {fakenodes.FAKE_TAINT['key']} taint, so any pod "
                        "may land there")
    _size_args(u)
    d = sub.add_parser("down", help="stop every process started and delete the state directory")
    d.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    sub.add_parser("status", help="show each component's pid and health, and the kubeconfig path")
    n = sub.add_parser("node", help="manage and fail process nodes")
    nsub = n.add_subparsers(dest="node_cmd", required=True)
    a = nsub.add_parser("add", help="start a new node (default name: the next free node-K)")
    a.add_argument("name", nargs="?", default=None)
    a.add_argument("--taint", action="append", default=[], help="key=value:Effect to register with (repeatable)")
    a.add_argument("--label", action="append", default=[], help="key=value to register with (repeatable)")
    a.add_argument("--real", action="store_true", help="a real node (kubelet + containerd); default name real-K")
    _size_args(a)
    nsub.add_parser("kill", help="SIGKILL the node's agent and pods; the API is not told").add_argument("name")
    nsub.add_parser("reclaim", help="spot reclaim: taint, delete pods gracefully, remove the node").add_argument(
        "name")
    nsub.add_parser("remove", help="remove a node at once (agent, pods, Node object)").add_argument("name")
    nsub.add_parser("list", help="show node records and whether their agents run")
    return p


def _size_args(p: argparse.ArgumentParser) -> None:
    """Flags for the size of new nodes."""
    d = NodeSize()
    p.add_argument("--node-cpu", default=d.cpu, help=f"CPU of each new node (default {d.cpu})")
    p.add_argument("--node-memory", default=d.memory, help=f"memory of each new node (default {d.memory})")
    p.add_argument("--node-pods", type=int, default=d.pods, help=f"pods per new node (default {d.pods})")


def _node(sd: StateDir, args: argparse.Namespace) -> int:
    """Run one ``node`` subcommand."""
    from localcluster import faults  # imports the kubernetes client: only where needed

    if args.node_cmd == "list":
        print(f"{'NODE':<20}{'INDEX':>6}  {'KIND':<8} {'STATE':<8} AGENT")
        for r in nodes.records(sd):
            alive = "running" if nodes.agent_alive(sd, r.name) else "-"
            print(f"{r.name:<20}{r.index:>6}  {r.kind:<8} {r.state:<8} {alive}")
    elif args.node_cmd == "add":
        size = NodeSize(cpu=args.node_cpu, memory=args.node_memory, pods=args.node_pods)
        labels = dict(kv.split("=", 1) for kv in args.label)
        if args.real:
            print(realnodes.add(sd, args.name, tuple(args.taint), labels, progress=controlplane.stderr_progress))
        else:
            print(nodes.add(sd, args.name, size, tuple(args.taint), labels))
    elif args.node_cmd == "kill":
        nodes.kill(sd, args.name)
    elif args.node_cmd == "reclaim":
        faults.reclaim(sd, args.name, controlplane.stderr_progress)
    elif args.node_cmd == "remove":
        faults.remove(sd, args.name)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return the process exit code."""
    args = _parser().parse_args(argv)
    sd = StateDir(args.state.absolute() if args.state else default_state_dir())
    try:
        if args.cmd == "build":
            print(build.kwok_bin_dir(force=args.force) if args.kwok
                  else build.node_bin_dir(force=args.force) if args.node else build.bin_dir(force=args.force))
        elif args.cmd == "up":
            size = NodeSize(cpu=args.node_cpu, memory=args.node_memory, pods=args.node_pods)
            kubeconfig = controlplane.up(sd, nodes_count=args.nodes, node_size=size, real_nodes_count=args.real_nodes)
            fakenodes.ensure(sd, args.fake_nodes, controlplane.stderr_progress, taint=not args.fake_nodes_untainted)
            print(kubeconfig)
        elif args.cmd == "down":
            with session_lock(sd):  # never pull the cluster from under a running test session or demo
                controlplane.down(sd, grace=args.grace)
        elif args.cmd == "status":
            return _status(sd)
        elif args.cmd == "node":
            return _node(sd, args)
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
    recs = nodes.records(sd)
    for r in recs:
        alive = nodes.agent_alive(sd, r.name)
        print(f"{'node ' + r.name:<26}{'':>8}  {'yes' if alive else 'no':<6} {r.state}")
    kc = sd.admin_kubeconfig
    print(f"kubeconfig: {kc if kc.is_file() else '(none: run up)'}")
    return 0 if all(h for *_, h in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
