"""Command line: `python -m benchmarks.fleet [--jobs 100 300] [--workers 8] [--deletions 1] [--failover] ...`.

Each N runs on a fresh private cluster (started and stopped here; kwok is built on first use, with
progress). Prints one column per N and, with --json/--plot, writes the numbers and a plot of each
against N. Goals (issue 16, at 1,000 jobs x 8 workers, 10 deletions/s): operator <= 1 core and
<= 512 MiB (<= 300 KiB per job), deletion -> generation p99 <= 2 s, <= 2 operator requests per event.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks.fleet import failover
from benchmarks.fleet.failover import run_failover
from benchmarks.fleet.report import ROWS, plot, table
from benchmarks.fleet.run import FleetResult, FleetSpec, run
from localcluster.waiting import WaitTimeout

ROOT = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    """Progress on stderr (the table alone goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the fleet at each N, print the table; exit 1 when a run came back broken."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, nargs="+", default=[100, 300], help="fleet sizes N (default 100 300)")
    p.add_argument("--workers", type=int, default=8, help="workers per job W (default 8)")
    p.add_argument("--deletions", type=float, default=1.0, help="worker pods deleted per second R (default 1)")
    p.add_argument("--window", type=float, default=60.0, help="steady window, seconds (default 60)")
    p.add_argument("--report-every", type=float, default=10.0, help="seconds between a job's reports (default 10)")
    p.add_argument("--churn-pods", type=int, default=0, help="unrelated pods in another namespace (default 0)")
    p.add_argument("--churn-rate", type=float, default=0.0, help="unrelated pods replaced per second (default 0)")
    p.add_argument("--reclaim-every", type=float, default=0.0, metavar="SECONDS",
                   help="in the window, every SECONDS a fresh simulated node joins and another is reclaimed "
                        "with its pods, as a spot provider does (default 0: none)")
    p.add_argument("--memory-breakdown", action="store_true",
                   help="probe the operator's memory before the fleet and after the window and add its growth per "
                        "job by part: glibc's heaps, Python's object arenas, live objects by type")
    p.add_argument("--tracemalloc", action="store_true",
                   help="with --memory-breakdown: also trace Python allocations by package (slows the operator)")
    p.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the operator process (repeatable), e.g. MALLOC_ARENA_MAX=8")
    p.add_argument("--failover", action="store_true",
                   help="instead: SIGKILL the leader of two operators under N jobs and time the standby's takeover "
                        "until every job has had a pass")
    p.add_argument("--then-failover", action="store_true",
                   help="also: after the steady window and its recovery (whole or not), SIGKILL the operator (run as "
                        "the leader beside a standby) and time the takeover on the same fleet (no second bring-up)")
    p.add_argument("--lease-seconds", type=int, default=15,
                   help="with --failover or --then-failover: the Lease duration (default 15)")
    p.add_argument("--bring-up-timeout", type=float, metavar="SECONDS",
                   help="how long the jobs may take to reach their target (default 600 + 2 per job; progress is "
                        "printed every 30 s)")
    p.add_argument("--tight-apf", action="store_true",
                   help="throttle the operator: its requests get 3 seats of the API server, the rest 429")
    p.add_argument("--apiserver-profile", action="store_true",
                   help="also write the API server's CPU profile over each window to "
                        "out/bench/fleet-apiserver-N.pprof (read it with `go tool pprof -top`)")
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--plot", type=Path, help="write a plot of each number against N here (PNG)")
    p.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                   help="run nothing: print the table (and --plot) of runs written earlier by --json, in N order")
    args = p.parse_args(argv)
    if args.from_json:
        return _report(sorted(_load(args.from_json), key=lambda r: r.spec.jobs), args)
    bad = [e for e in args.operator_env if "=" not in e]
    if bad:
        p.error(f"--operator-env {bad[0]!r}: give NAME=VALUE")
    operator_env = dict(e.split("=", 1) for e in args.operator_env)
    results = []
    for n in args.jobs:
        spec = FleetSpec(jobs=n, workers=args.workers, deletions_per_s=args.deletions, window_s=args.window,
                         report_every_s=args.report_every, churn_pods=args.churn_pods, churn_per_s=args.churn_rate,
                         tight_apf=args.tight_apf, memory_breakdown=args.memory_breakdown,
                         tracemalloc=args.tracemalloc, bring_up_timeout_s=args.bring_up_timeout,
                         then_failover=args.then_failover, lease_seconds=args.lease_seconds,
                         reclaim_every_s=args.reclaim_every)
        print(f"fleet: {n} jobs x {args.workers} workers, {args.deletions} deletions/s"
              f"{', then a failover' if args.then_failover else ', failover' if args.failover else ''}",
              file=sys.stderr, flush=True)
        try:
            if args.failover:
                results.append(run_failover(spec, ROOT / "out" / "bench", say, lease_seconds=args.lease_seconds))
            else:
                results.append(run(spec, ROOT / "out" / "bench" / f"fleet-operator-{n}.log", progress=say,
                                   operator_env=operator_env,
                                   apiserver_profile=(ROOT / "out" / "bench" / f"fleet-apiserver-{n}.pprof"
                                                      if args.apiserver_profile else None)))
        except WaitTimeout as e:  # a larger fleet would not fit either: keep what the smaller ones measured
            say(f"fleet: {n} jobs did not finish: {e}; not trying larger N")
            results.append(FleetResult(spec, problems=[f"{n} jobs: {e}"]))
            break
        finally:
            if args.json:  # after every N: a later N that runs out of time or memory keeps the earlier ones
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps([{"spec": asdict(r.spec), "numbers": r.numbers,
                                                  "problems": r.problems} for r in results], indent=2) + "\n")
    return _report(results, args)


def _load(paths: list[Path]) -> list[FleetResult]:
    """The runs in files written by --json."""
    return [FleetResult(FleetSpec(**r["spec"]), r["numbers"], r["problems"])
            for path in paths for r in json.loads(path.read_text())]


def _report(results: list[FleetResult], args: argparse.Namespace) -> int:
    """Print the table (and write the plot); 1 when a run came back broken."""
    print(table(results, failover.ROWS if args.failover else ROWS))
    if args.plot:
        plot(results, args.plot)
    broken = [p for r in results for p in r.problems]
    for problem in broken[:20]:
        print(f"BROKEN: {problem}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
