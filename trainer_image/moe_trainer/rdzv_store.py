"""The rendezvous store: `python -m moe_trainer.rdzv_store --port 29400` (what the rendezvous pod runs).

A c10d TCPStore server that no worker hosts, so losing any worker never loses the store. Every
generation's process group keeps its keys under its own prefix (`<run>-g<generation>`, see
`runtime/rendezvous.py`), so keys of old generations never mix with new ones. The store has no
authentication: the operator admits only the job's pods to it with a NetworkPolicy.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import timedelta
from types import FrameType

from torch.distributed import TCPStore


def serve(host: str, port: int) -> None:
    """Run the store until SIGTERM or SIGINT."""
    store = TCPStore(host, port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30),
                     multi_tenant=True)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"rendezvous store listening on {host}:{store.port}", flush=True)
    done.wait()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m moe_trainer.rdzv_store", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=29400, help="TCP port (29400 is the rendezvous Service's)")
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
