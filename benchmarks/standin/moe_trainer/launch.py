"""Stand-in worker: report progress into the job's ConfigMap every PERIOD seconds until SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime

from kubernetes import client, config

from dstj_api.contract import ENV_PROGRESS, ENV_READY_PROBE, EXIT_STOPPED, PROGRESS_KEY, READY_DIR

PERIOD = 5.0


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
    api = client.CoreV1Api()
    namespace, name = os.environ[ENV_PROGRESS].removeprefix("k8s:").split("/")
    step = 0
    while not stop:
        step += 1
        report = {"step": step, "totalSteps": 1000000, "generation": 0, "worldSize": 1, "expertParallel": 1,
                  "dataParallel": 1, "loss": 1.0, "state": "running", "updated": datetime.now(UTC).isoformat()}
        try:
            api.patch_namespaced_config_map(name, namespace, {"data": {PROGRESS_KEY: json.dumps(report)}})
        except Exception as e:  # the API server may be busy with 50 jobs: try again next period
            print(f"progress report failed: {e}", file=sys.stderr)
        deadline = time.monotonic() + PERIOD
        while not stop and time.monotonic() < deadline:
            time.sleep(0.2)
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
