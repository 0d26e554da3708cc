"""`make bench`: every benchmark section, printing measured numbers and ratios."""

from __future__ import annotations

from benchmarks import (
    autoscale,
    compression,
    compute_to_loss,
    data_scale,
    elastic,
    expert_layer,
    kv_cache,
    placement,
    window,
    zero,
)

COLD_BUILD = "11.1 min with empty Go caches (Kubernetes 8.3, etcd 0.6, helm 2.3; 8.7 GB peak disk), 2026-11-23"
"""Measured once by `localcluster/build.sh` with GOMODCACHE and GOCACHE empty: too long to redo per bench."""


def main() -> None:
    """Run the sections in order."""
    expert_layer.run()
    window.run()
    kv_cache.run()
    print("\n## Local cluster (5 process nodes, 100 pods in one burst)")
    print(f"cold build of the control plane: {COLD_BUILD}")
    from localcluster import bench as cluster_bench

    cluster_bench.run()
    elastic.run()
    zero.run()
    compression.run()
    placement.run()
    data_scale.run()
    autoscale.run()
    print("\n## Fleet on simulated nodes (20 jobs x 8 workers, a node reclaimed every 10 s; the curve: "
          "python -m benchmarks.fleet)")
    from benchmarks.fleet.__main__ import main as fleet

    fleet(["--jobs", "20", "--window", "30", "--deletions", "1", "--reclaim-every", "10"])
    # Last and longest (about 12 training runs of 300 steps: tens of minutes on 2 cores).
    compute_to_loss.run()


if __name__ == "__main__":
    main()
