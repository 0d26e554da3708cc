"""How a container of a pod is started: the pure mapping from pod spec to ``container.Launch``.

Kept apart from the pod worker so the mapping (image -> argv, env with service links and the
downward API, volume mounts, cgroup, log file) reads in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localcluster.nodeagent import cgroups, container, envvars, hosts, images, netns, termlog, volumes
from localcluster.nodeagent.context import PodContext
from localcluster.nodeagent.status import Slot

Obj = dict[str, Any]


def build(ctx: PodContext, pod: Obj, pod_dir: Path, sandbox: netns.Sandbox, vols: volumes.PodVolumes, slot: Slot,
          probe_argv: list[str] | None = None) -> container.Launch:
    """The launch of one container run, or (with ``probe_argv``) of an exec probe in it.

    Raises EnvError / ImageError / VolumeError when the spec cannot be satisfied (yet).
    """
    c, cfg = slot.spec, ctx.cfg
    host = hosts.pod_hostname(pod)
    base = images.base_env(cfg.python, host) | envvars.service_env(cfg.network.bridge_ip, cfg.apiserver_port)
    env = envvars.container_env(pod, c, base, sandbox.ip, ctx.get, ctx.allocatable)
    argv = probe_argv
    if argv is None:
        argv = [envvars.expand(a, env) for a in images.argv(c.get("image", ""), c.get("command"), c.get("args"))]
    # No image file system to start in: a private scratch directory, removed with the pod.
    work = pod_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    uid, suffix = pod["metadata"]["uid"], "-probe" if probe_argv is not None else ""
    cgroup = None if probe_argv is not None else cgroups.container_dir(cfg.paths.sd.tag, cfg.spec.name, uid, slot.name)
    message = None
    if probe_argv is None:  # the file systems are shared: each run's message file is its own, named in the env
        message = termlog.path(pod_dir, slot.name, slot.restarts)
        env[termlog.ENV] = str(message)
    return container.Launch(
        netns=sandbox.netns, hostname=host, argv=argv, env=env, mounts=volumes.mounts(c, vols),
        working_dir=c.get("workingDir") or str(work), python=cfg.python, cgroup=cgroup,
        spec_path=pod_dir / "containers" / f"{slot.name}{suffix}.json",
        log_path=container.log_path(pod_dir, slot.name, slot.restarts),
        mountpoint_record=cfg.paths.sd.root / "mountpoints.txt", termination_path=message,
        fallback_to_logs=c.get("terminationMessagePolicy") == "FallbackToLogsOnError")
