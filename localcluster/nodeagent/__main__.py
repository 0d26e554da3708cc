"""``python -m localcluster.nodeagent --state DIR --node NAME``: run one node's agent.

Started detached by ``localcluster.nodes`` (which records its pid, so ``down`` and ``node kill``
find it); it logs to stderr, which that record sends to ``<state>/logs/node-agent-NAME.log``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from localcluster.nodeagent.agent import Agent
from localcluster.nodeagent.config import AgentConfig, NodePaths, NodeSpec
from localcluster.state import StateDir


def _exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT: stop at once. Pods keep running, as when a kubelet stops; ``down``
    and ``node reclaim`` deal with them."""
    logging.getLogger("localcluster.nodeagent").info("signal %d: exiting", signum)
    logging.shutdown()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the node record and run the agent until signalled."""
    p = argparse.ArgumentParser(prog="python -m localcluster.nodeagent", description=__doc__)
    p.add_argument("--state", type=Path, required=True, help="the cluster's state directory")
    p.add_argument("--node", required=True, help="the node's name (its record is in <state>/nodes/NAME)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    sd = StateDir(args.state.absolute())
    paths = NodePaths(sd, args.node)
    ports, net = sd.load_ports(), sd.load_network()
    if ports is None or net is None:
        print(f"no cluster in {sd.root}: run python -m localcluster up", file=sys.stderr)
        return 2
    cfg = AgentConfig(paths=paths, spec=NodeSpec.load(paths.spec), network=net, apiserver_port=ports.apiserver)
    Agent(cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
