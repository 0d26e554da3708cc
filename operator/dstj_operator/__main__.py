"""`python -m dstj_operator`: run the operator. Configured by environment (see `settings`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

import dstj_operator.handlers
from dstj_operator.cache import STORE
from dstj_operator.cluster import preload_clients
from dstj_operator.crd_revision import check_installed_crd
from dstj_operator.health import Probes, serve_health
from dstj_operator.leader import LeaseElector
from dstj_operator.metrics import LEADER
from dstj_operator.passes import PASSES
from dstj_operator.settings import OperatorSettings, SettingsError
from dstj_operator.watches import WatchTracker, expected_streams

EXIT_LEASE_LOST = 3
"""Exit code of a leader that lost its lease: the pod restarts and waits as a standby."""

log = logging.getLogger("dstj_operator")


def load_kube_config() -> None:
    """In a pod: its ServiceAccount; elsewhere: KUBECONFIG (read now: the client reads it at import)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


def main(argv: list[str] | None = None) -> int:
    """Check the CRD, serve probes and metrics, win the leader lease when elected, then run kopf until stopped.

    Exit codes: 2 a bad setting or a missing or older CRD (the message says what to do), 3 the lease was lost.
    """
    argparse.ArgumentParser(
        prog="python -m dstj_operator", description="The DeepSeekTrainingJob operator.",
        epilog="Configured by environment: DSTJ_WATCH_NAMESPACES, DSTJ_LEADER_ELECTION, DSTJ_LEADER_LEASE, "
               "DSTJ_LEADER_LEASE_SECONDS, POD_NAME, POD_NAMESPACE, DSTJ_METRICS_PORT, DSTJ_HEALTH_PORT, "
               "DSTJ_STUCK_SECONDS, DSTJ_STATUS_PROGRESS_SECONDS, DSTJ_LOG_LEVEL "
               "(see docs/operations.md).").parse_args(argv)
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as e:
        print(f"dstj-operator: {e}", file=sys.stderr)
        return 2
    # kopf installs the one JSON handler on the root logger; a second handler here printed every line twice.
    kopf.configure(verbose=settings.log_level == "debug", log_format=kopf.LogFormat.JSON)
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.log_level != "debug":
        # kopf logs each handler's success at INFO: a JSON line per watch event, most of the log and a share of the
        # CPU at a fleet's hundreds of events a second. Its warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
    load_kube_config()
    problem = check_installed_crd(client.ApiextensionsV1Api())
    if problem:  # Helm never upgrades crds/: an operator newer than its CRD must not run
        print(f"dstj-operator: {problem}", file=sys.stderr)
        return 2
    dstj_operator.handlers.PACER.every = settings.progress_status_seconds
    preload_clients()  # a standby pays for the imports before it leads, not in its first passes
    if not settings.watch_namespaces:
        dstj_operator.handlers.register_node_watch()  # capacity signals for spec.autoscaling
    watches = WatchTracker(expected_streams(settings.watch_namespaces), STORE, dstj_operator.handlers.watch_event)
    watches.install()
    elector = None
    if settings.leader_election:
        elector = LeaseElector(settings.lease_name, settings.lease_namespace, settings.identity,
                               settings.lease_seconds)
    if settings.health_port:
        serve_health(settings.health_port, Probes(
            passes=PASSES, stuck_seconds=settings.stuck_seconds, watches=watches.state,
            leading=lambda: elector is None or elector.leading,
            lease_read_at=lambda: elector.last_read if elector else None, lease_seconds=settings.lease_seconds))
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    if elector is not None:
        elector.acquire()
        elector.keep(on_lost=lambda: os._exit(EXIT_LEASE_LOST))  # never two writers: stop at once
    else:
        LEADER.set(1)
    log.info("reconciling DeepSeekTrainingJobs in %s", ", ".join(settings.watch_namespaces) or "all namespaces")
    try:
        if settings.watch_namespaces:
            kopf.run(standalone=True, namespaces=list(settings.watch_namespaces))
        else:
            kopf.run(standalone=True, clusterwide=True)
    finally:
        if elector is not None:
            elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
