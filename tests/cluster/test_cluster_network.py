"""Pod networking on process nodes: own IPs, own hostnames, headless Services by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster.kubectl import Kubectl
from localcluster.nodeagent.netns import bridge_mac
from localcluster.state import StateDir
from tests.cluster.kobjects import apply, logs, phase, pod, wait_for, wait_gone

pytestmark = pytest.mark.cluster

SERVER = """
import socket
me = socket.gethostname()
srv = socket.create_server(("0.0.0.0", 7000))
while True:
    conn, _ = srv.accept()
    conn.sendall(f"{me} {socket.gethostbyname(me)}".encode())
    conn.close()
"""

CLIENT = """
import json, os, socket, time
deadline = time.monotonic() + 30
while True:  # the Service's name appears once the server is Ready: retry until then
    try:
        with socket.create_connection(("srv", 7000), timeout=2) as c:
            reply = c.recv(200).decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
ns = os.environ["NS"]
print(json.dumps({"reply": reply, "me": socket.gethostbyname(socket.gethostname()),
                  "fqdn": socket.gethostbyname(f"srv.{ns}.svc.cluster.local"),
                  "by_hostname": socket.gethostbyname(f"server.srv.{ns}.svc.cluster.local")}))
"""


def test_two_pods_talk_over_tcp_by_service_name_and_each_hostname_is_its_own_ip(kube_nodes: Kubectl,
                                                                               ns: str) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "srv"},
           "spec": {"clusterIP": "None", "selector": {"role": "server"}, "ports": [{"port": 7000}]}}
    server = pod("server", "", image="python:3.11", grace=1, labels={"role": "server"}, hostname="server",
                 subdomain="srv", container={"command": ["python", "-c", SERVER]})
    env = [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    client = pod("client", "", image="python:3.11", container={"command": ["python", "-c", CLIENT], "env": env})
    apply(kube_nodes, ns, svc, server, client)

    done = wait_for(kube_nodes, "pod", "client", ns, lambda p: phase(p) in ("Succeeded", "Failed"), timeout=60)
    srv_pod = wait_for(kube_nodes, "pod", "server", ns, lambda p: phase(p) == "Running")

    out = logs(kube_nodes, ns, "client")
    assert phase(done) == "Succeeded", out
    seen = json.loads(out)
    server_ip, client_ip = srv_pod["status"]["podIP"], done["status"]["podIP"]
    assert server_ip != client_ip
    assert seen["reply"] == f"server {server_ip}", "the server's hostname must resolve to its own pod IP"
    assert seen["me"] == client_ip, "the client's hostname must resolve to its own pod IP"
    assert seen["fqdn"] == server_ip
    assert seen["by_hostname"] == server_ip


def test_the_bridge_keeps_its_mac_when_pods_come_and_go(kube_nodes: Kubectl, state: StateDir, ns: str) -> None:
    """The pods' gateway (the API server's address) is the bridge: if its MAC followed its lowest port, deleting
    that pod would leave every other pod's ARP entry for the gateway pointing nowhere, and their API calls would
    hang until the entry was probed again (13 s measured, in a survivor's progress report after a reclaim)."""
    net = state.load_network()
    assert net is not None
    mac = Path(f"/sys/class/net/{net.bridge}/address")
    sleepers = [pod(f"sleeper-{i}", "sleep 300", grace=0) for i in range(3)]
    apply(kube_nodes, ns, *sleepers)
    for p in sleepers:
        wait_for(kube_nodes, "pod", p["metadata"]["name"], ns, lambda q: phase(q) == "Running")
    assert mac.read_text().strip() == bridge_mac(net.bridge)
    for p in sleepers:  # every port goes, whichever had the lowest MAC
        kube_nodes("delete", "pod", p["metadata"]["name"], "-n", ns, "--wait=false")
    for p in sleepers:
        wait_gone(kube_nodes, "pod", p["metadata"]["name"], ns)
    assert mac.read_text().strip() == bridge_mac(net.bridge)
