"""Stand-in worker: report progress into the job's ConfigMap every PERIOD seconds until SIGTERM.

It follows the published membership as a real worker does (polled from its job's status): the first member of
the published generation reports that generation and its size, at once when a generation is published and then
every PERIOD seconds. With `DSTJ_STANDIN_TOKENS_PER_S` ("1:100,2:190,4:200": workers -> tokens/s) it reports that
steady throughput for the generation's size, so the operator's efficiency rule (spec.autoscaling.
minScalingEfficiency) can be tested without training; a size not listed reports none.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config

from dstj_api.contract import (
    ENV_MEMBER_ID,
    ENV_MEMBERSHIP,
    ENV_PROGRESS,
    ENV_READY_PROBE,
    EXIT_STOPPED,
    GROUP,
    PLURAL,
    PROGRESS_KEY,
    READY_DIR,
    VERSION,
)

PERIOD = 5.0
POLL = 0.25
"""How often the membership is read."""
TOKENS_ENV = "DSTJ_STANDIN_TOKENS_PER_S"


def tokens_per_second(curve: str, world: int) -> float | None:
    """The steady tokens/s `curve` ("workers:tokens/s,...") gives `world` workers (None: not listed)."""
    table = {int(w): float(t) for w, t in (pair.split(":") for pair in curve.split(",") if pair)}
    return table.get(world)


def _membership(api: client.CustomObjectsApi, namespace: str, job: str) -> dict[str, Any]:
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    except Exception:  # the API server may be busy: the membership is read again next poll
        return {}
    return dict((obj.get("status") or {}).get("membership") or {})


def main() -> int:
    """Report steps until stopped; exit EXIT_STOPPED (83) on SIGTERM like the real supervisor."""
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # Ready at once, as the real worker is once torch is imported (the readiness probe reads this file).
    if os.environ.get(ENV_READY_PROBE) == "1":
        open(f"{READY_DIR}/dstj-ready-{os.environ['HOSTNAME']}", "w").close()
    config.load_incluster_config()
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    namespace, name = os.environ[ENV_PROGRESS].removeprefix("k8s:").split("/")
    job = os.environ[ENV_MEMBERSHIP].removeprefix("k8s:").split("/")[1]
    me = os.environ.get(ENV_MEMBER_ID) or os.environ["HOSTNAME"]
    curve = os.environ.get(TOKENS_ENV, "")
    step, reported, generation = 0, 0.0, None
    while not stop:
        m = _membership(custom, namespace, job)
        members = m.get("members") or []
        fresh = m.get("generation") != generation
        if me in members[:1] and m.get("state") == "running" and (fresh or time.monotonic() - reported >= PERIOD):
            generation, world = m["generation"], len(members)
            step += 1
            report = {"step": step, "totalSteps": 1000000, "generation": generation, "worldSize": world,
                      "expertParallel": 1, "dataParallel": world, "loss": 1.0, "state": "running",
                      "steadyTokensPerSecond": tokens_per_second(curve, world),
                      "updated": datetime.now(UTC).isoformat()}
            try:
                core.patch_namespaced_config_map(name, namespace, {"data": {PROGRESS_KEY: json.dumps(report)}})
                reported = time.monotonic()
            except Exception as e:  # the API server may be busy with 50 jobs: try again next period
                print(f"progress report failed: {e}", file=sys.stderr)
        time.sleep(POLL)
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
