"""`make bench`: every benchmark section, printing measured numbers and ratios."""

from __future__ import annotations

from benchmarks import compute_to_loss, elastic, expert_layer, kv_cache, window

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
    # Last and longest (about 12 training runs of 300 steps: tens of minutes on 2 cores).
    compute_to_loss.run()


if __name__ == "__main__":
    main()
