"""What one node agent is told at start, and where it keeps its files.

One agent process runs per node (``python -m localcluster.nodeagent --state DIR --node NAME``):
killing a node is then killing one process and its pods, as a machine dies, and the agents
need no coordination beyond the API server and disjoint address ranges.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localcluster.state import Network, StateDir

#: The kubelet version the agent reports (the control plane's).
KUBELET_VERSION = "v1.37.2"
#: The port of the agent's kubelet API (logs), on the node's own address.
KUBELET_PORT = 10250


@dataclass(kw_only=True, slots=True)
class NodeSpec:
    """A node's identity and size, as recorded in ``<state>/nodes/<name>/node.json``."""

    name: str
    #: 1..254; gives the node's address 10.X.index.1 and its pods' 10.X.index.2-254.
    index: int
    #: Allocatable CPU (Kubernetes quantity, e.g. "4").
    cpu: str = "4"
    #: Allocatable memory (e.g. "8Gi").
    memory: str = "8Gi"
    #: Most pods the scheduler may place here.
    pods: int = 110
    #: Taints to register with, as "key=value:Effect" (or "key:Effect").
    taints: list[str] = field(default_factory=list)
    #: Labels to register with, beyond the standard ones (must be allowed to nodes).
    labels: dict[str, str] = field(default_factory=dict)
    #: "active" (``up`` restarts its agent if it died) or "killed" (``node kill``: stays dead
    #: until ``node add NAME`` or ``node remove NAME``). A removed node has no record.
    state: str = "active"
    #: "process" (the node agent runs pods as host processes) or "real" (a kubelet and containerd:
    #: ``realnodes.py``). Real nodes report the machine's own capacity; cpu/memory are not theirs.
    kind: str = "process"

    def save(self, path: Path) -> None:
        """Write the record atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> NodeSpec:
        """Read a record written by ``save``."""
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class NodePaths:
    """Files of one node under the state directory."""

    sd: StateDir
    node: str

    @property
    def root(self) -> Path:
        """``<state>/nodes/<name>``."""
        return self.sd.nodes / self.node

    @property
    def spec(self) -> Path:
        """The node record (``NodeSpec``)."""
        return self.root / "node.json"

    @property
    def kubeconfig(self) -> Path:
        """The node's own identity (system:node:NAME)."""
        return self.root / "node.kubeconfig"

    @property
    def proxy_kubeconfig(self) -> Path:
        """The service-proxy identity used to read EndpointSlices."""
        return self.root / "proxy.kubeconfig"

    @property
    def pods(self) -> Path:
        """One directory per pod (by uid): sandbox record, volumes, logs."""
        return self.root / "pods"

    def pod(self, uid: str) -> Path:
        """The directory of one pod."""
        return self.pods / uid


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent needs, resolved once at start."""

    paths: NodePaths
    spec: NodeSpec
    network: Network
    apiserver_port: int
    #: The interpreter pods' commands find first on PATH (the project's virtual environment).
    python: Path = Path(sys.executable)
    #: First and longest restart back-off, seconds (kubelet: 10 s and 300 s; short here so
    #: crash loops show up in tests within seconds).
    backoff_initial: float = 1.0
    backoff_max: float = 30.0

    @property
    def node_ip(self) -> str:
        """The node's InternalIP (on the bridge)."""
        return self.network.node_ip(self.spec.index)
