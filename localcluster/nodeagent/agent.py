"""One node's agent: registers the node, watches its pods, runs a worker per pod.

Threads: the pod watch (main thread), the heartbeat, the EndpointSlice watch (as the
service-proxy identity), the kubelet API server, and one worker per pod. The agent trusts
nothing from a previous incarnation of itself: at start it kills whatever that one left running
for this node and removes its namespaces, then runs the node's pods afresh (as a kubelet after
a reboot), so a crashed agent never leaves a pod half-managed.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from typing import Any

from localcluster import pki
from localcluster.nodeagent import cgroups, hosts, kubeletserver, netns
from localcluster.nodeagent.config import KUBELET_PORT, AgentConfig
from localcluster.nodeagent.context import IpPool, PodContext
from localcluster.nodeagent.heartbeat import Heartbeat
from localcluster.nodeagent.kubeapi import Api, ApiError
from localcluster.nodeagent.podworker import PodWorker
from localcluster.nodeagent.status import Slot

Obj = dict[str, Any]
log = logging.getLogger("localcluster.nodeagent")


class Agent:
    """The kubelet's job for one Node, with pods as local processes."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.api = Api(cfg.paths.kubeconfig)
        self.proxy_api = Api(cfg.paths.proxy_kubeconfig, pool_size=2)
        alloc = {"cpu": cfg.spec.cpu, "memory": cfg.spec.memory}
        self.ctx = PodContext(cfg=cfg, api=self.api, records=hosts.ServiceRecords(),
                              ips=IpPool(cfg.network.pod_ips(cfg.spec.index)), log=log, allocatable=alloc)
        self.workers: dict[str, PodWorker] = {}
        self.done: set[str] = set()  # uids whose worker finished: later events are stale
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.heartbeat = Heartbeat(cfg, self.api, log)

    def run(self) -> None:
        """Set up the node and serve until stopped (the pod watch runs in this thread)."""
        net, name = self.cfg.network, self.cfg.spec.name
        netns.ensure_bridge(net)
        netns.ensure_node_address(net, self.cfg.node_ip)
        self._clean_leftovers()
        sd = self.cfg.paths.sd
        serving = pki.CertPair(sd.pki / f"nodes/{name}-serving.crt", sd.pki / f"nodes/{name}-serving.key")
        kubeletserver.serve(self.cfg.node_ip, KUBELET_PORT, serving.cert, serving.key, sd.pki / "ca.crt",
                            self._lookup, log)
        self.heartbeat.register()
        self.heartbeat.thread.start()
        threading.Thread(target=self.proxy_api.watch, name="endpointslices", daemon=True,
                         args=("/apis/discovery.k8s.io/v1/endpointslices", {"labelSelector": hosts.HEADLESS_LABEL},
                               self._slices_listed, self._slice_event, self.stop)).start()
        log.info("node %s ready (address %s)", name, self.cfg.node_ip)
        self.api.watch("/api/v1/pods", {"fieldSelector": f"spec.nodeName={name}"}, self._pods_listed,
                       self._pod_event, self.stop)

    def _clean_leftovers(self) -> None:
        """Kill and remove what an earlier agent of this node left (processes, namespaces, files)."""
        cgroups.kill_and_remove(cgroups.node_dir(self.cfg.paths.sd.tag, self.cfg.spec.name))
        pods_dir = self.cfg.paths.pods
        for record in pods_dir.glob("*/sandbox.json") if pods_dir.is_dir() else []:
            try:
                sb = json.loads(record.read_text())
                netns.delete(netns.Sandbox(netns=sb["netns"], ip="", veth=sb["veth"]))
            except (OSError, ValueError, KeyError):
                continue
        shutil.rmtree(pods_dir, ignore_errors=True)

    # -- pods ------------------------------------------------------------------------------
    def _pods_listed(self, pods: list[Obj]) -> None:
        """A full list: start workers for new pods, stop those whose pod is gone."""
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._pod_event("MODIFIED", pod)
        with self.lock:
            gone = [w for uid, w in self.workers.items() if uid not in seen]
        for w in gone:
            w.remove()

    def _pod_event(self, etype: str, pod: Obj) -> None:
        """Route one pod event to its worker, starting one for a new pod."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            for u in [u for u, w in self.workers.items() if not w.thread.is_alive()]:
                self.done.add(u)
                del self.workers[u]
            worker = self.workers.get(uid)
            if worker is None and etype != "DELETED" and uid not in self.done:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    self._finished_elsewhere(pod)
                    return
                worker = self.workers[uid] = PodWorker(self.ctx, pod)
                worker.thread.start()
                return
        if worker is None:
            return
        if etype == "DELETED":
            worker.remove()
        else:
            worker.update(pod)

    def _finished_elsewhere(self, pod: Obj) -> None:
        """A terminal pod this agent never ran (an earlier incarnation did): nothing to run;
        finish its deletion if one is under way."""
        uid = pod["metadata"]["uid"]
        self.done.add(uid)
        if pod["metadata"].get("deletionTimestamp"):
            meta = pod["metadata"]
            try:
                self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
            except ApiError as e:
                log.info("delete of finished pod %s failed: %s", meta["name"], e)

    def _lookup(self, ns: str, name: str) -> tuple[Any, list[Slot]] | None:
        """Find a pod this node runs by namespace and name (for the kubelet API)."""
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.ns == ns and w.name == name and w.thread.is_alive():
                return w.dir, w.slots()
        return None

    # -- Services --------------------------------------------------------------------------
    def _slices_listed(self, slices: list[Obj]) -> None:
        """Reset the Service records and rewrite every affected hosts file."""
        self._refresh(self.ctx.records.replace_all(slices))

    def _slice_event(self, etype: str, sl: Obj) -> None:
        """Apply one EndpointSlice change and rewrite the hosts files of its namespace."""
        ns = self.ctx.records.apply(etype, sl)
        if ns is not None:
            self._refresh({ns})

    def _refresh(self, namespaces: set[str]) -> None:
        with self.lock:
            workers = [w for w in self.workers.values() if w.ns in namespaces]
        for w in workers:
            try:
                w.refresh_hosts()
            except OSError as e:
                log.warning("hosts file of %s/%s: %s", w.ns, w.name, e)
