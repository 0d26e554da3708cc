"""A tiny dynamic provisioner: a PersistentVolume per claim, backed by a host directory.

Process nodes all share this machine's file system, so a directory is a volume every node can
mount at once: it serves ``ReadWriteMany`` as well as ``ReadWriteOnce``. ``up`` (with nodes)
creates the default StorageClass ``localcluster-hostpath`` and starts this process
(``python -m localcluster.provisioner --state DIR``), which watches claims of that class and
creates a bound-to-be PV (``hostPath`` under ``<state>/volumes/``) for each; the real PV
controller binds them. When a claim is deleted its PV is Released; with reclaim policy
``Delete`` (the class's) the directory and the PV are removed. Everything goes with ``down``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from localcluster.nodeagent.kubeapi import Api, ApiError
from localcluster.state import StateDir

Obj = dict[str, Any]
CLASS = "localcluster-hostpath"
PROVISIONER = "localcluster.dev/hostpath"
log = logging.getLogger("localcluster.provisioner")


def storage_class() -> Obj:
    """The default StorageClass (Immediate binding: a claim is bound before any pod needs it)."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}


def volume_for(pvc: Obj, root: Path) -> Obj:
    """The PV that satisfies ``pvc``: its size, its access modes, a directory of its own."""
    meta, spec = pvc["metadata"], pvc["spec"]
    name = f"pvc-{meta['uid']}"
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {"capacity": {"storage": spec["resources"]["requests"]["storage"]},
                     "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": CLASS,
                     "volumeMode": spec.get("volumeMode", "Filesystem"),
                     "hostPath": {"path": str(root / f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"),
                                  "type": "DirectoryOrCreate"},
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                                  "name": meta["name"], "uid": meta["uid"]}}}


class Provisioner:
    """Watches claims and volumes; provisions and deletes."""

    def __init__(self, sd: StateDir) -> None:
        self.api = Api(sd.admin_kubeconfig, pool_size=4)
        self.root = sd.root / "volumes"
        self.stop = threading.Event()

    def claim(self, etype: str, pvc: Obj) -> None:
        """Provision a volume for a pending claim of our class."""
        if etype == "DELETED" or pvc["spec"].get("storageClassName") != CLASS or pvc["spec"].get("volumeName"):
            return
        pv = volume_for(pvc, self.root)
        Path(pv["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
        try:
            self.api.post("/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s", pv["metadata"]["name"], pvc["metadata"]["namespace"],
                     pvc["metadata"]["name"])
        except ApiError as e:
            if e.status != 409:
                log.warning("provisioning for %s failed: %s", pvc["metadata"]["name"], e)

    def volume(self, etype: str, pv: Obj) -> None:
        """Delete a released volume of ours, directory first."""
        ours = (pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if etype == "DELETED" or not ours or pv.get("status", {}).get("phase") != "Released":
            return
        path = Path(pv["spec"]["hostPath"]["path"])
        if self.root in path.parents:
            shutil.rmtree(path, ignore_errors=True)
        try:
            self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        except ApiError as e:
            if e.status != 404:
                log.warning("deleting %s failed: %s", pv["metadata"]["name"], e)

    def run(self) -> None:
        """Ensure the StorageClass, then watch claims (this thread) and volumes (another)."""
        try:
            self.api.post("/apis/storage.k8s.io/v1/storageclasses", storage_class())
        except ApiError as e:
            if e.status != 409:
                raise
        threading.Thread(target=self.api.watch, daemon=True, name="pvs",
                         args=("/api/v1/persistentvolumes", {}, self._volumes, self.volume, self.stop)).start()
        self.api.watch("/api/v1/persistentvolumeclaims", {}, self._claims, self.claim, self.stop)

    def _claims(self, items: list[Obj]) -> None:
        for pvc in items:
            self.claim("ADDED", pvc)

    def _volumes(self, items: list[Obj]) -> None:
        for pv in items:
            self.volume("ADDED", pv)


def main(argv: list[str] | None = None) -> int:
    """Run the provisioner of one cluster until killed."""
    p = argparse.ArgumentParser(prog="python -m localcluster.provisioner", description=__doc__)
    p.add_argument("--state", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    Provisioner(StateDir(args.state.absolute())).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
