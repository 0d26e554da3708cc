"""The first process of a container: join its cgroup, set the hostname, mount volumes, exec.

The agent runs ``ip netns exec <ns> unshare --uts -- python -I -S shim.py SPEC.json``. By then
the process is in the pod's network namespace, in a private mount namespace (``ip netns exec``
makes one, marks / as a slave so nothing propagates back to the host, and bind-mounts
``/etc/netns/<ns>/hosts`` and ``resolv.conf`` over ``/etc``) and in its own UTS namespace. This
script finishes the container: it moves itself into the container's cgroup, sets the pod's
hostname, bind-mounts each volume at its ``mountPath`` (read-only where asked), changes to the
working directory and ``exec``s the command, which keeps the pid, so the agent's Popen is the
container's main process.

Standard library only, run with ``-I -S``: it starts in ~10 ms and sees none of the agent's
state. It never returns on success; when the command cannot be started it writes the reason to
``SPEC.json.start-error`` and exits 128, which the agent reports as ``StartError``.
"""

import ctypes
import json
import os
import socket
import sys

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384


def _mount(libc: ctypes.CDLL, src: str | None, dst: str, flags: int) -> None:
    """mount(2), raising OSError with the errno on failure."""
    if libc.mount(src.encode() if src else None, dst.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def _source(path: str) -> str:
    """A name for ``path`` that stays valid whatever is mounted later: ``/proc/self/fd/N`` of an O_PATH
    descriptor (closed by the exec). A missing source raises: the pod is going away and its volume with it."""
    try:
        fd = os.open(path, os.O_PATH)
    except FileNotFoundError:
        raise FileNotFoundError(2, f"mount source {path} is gone") from None
    return f"/proc/self/fd/{fd}"


def _mountpoint(src: str, dst: str, record: str) -> None:
    """Create the mount point like the source (a directory, or an empty file for a file).

    Mount points live on the host's file system (the mount namespace is private, the files are
    not); each one created is appended to ``record`` so ``down`` removes it once no pod runs.
    """
    if not os.path.exists(src):
        # The pod is going away and its volume with it: never guess a mountpoint's type (a file made
        # here where a directory belongs would break every later pod that mounts at that path).
        raise FileNotFoundError(2, f"mount source {src} is gone")
    if os.path.isdir(src) and os.path.isfile(dst) and os.path.getsize(dst) == 0:
        os.unlink(dst)  # an empty file mountpoint left by an older agent's race: a directory belongs here
    missing = []
    d = dst if os.path.isdir(src) else os.path.dirname(dst)
    while d and d != "/" and not os.path.lexists(d):
        missing.append(d)
        d = os.path.dirname(d)
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    elif not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "a"):
            missing.insert(0, dst)
    if missing:
        with open(record, "a") as f:
            f.write("".join(m + "\n" for m in missing))


def main(spec_path: str) -> None:
    """Set the container up as ``spec_path`` says and exec its command."""
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        if spec.get("cgroup_fd") is not None:
            os.write(spec["cgroup_fd"], str(os.getpid()).encode())
            os.close(spec["cgroup_fd"])
        socket.sethostname(spec["hostname"])
        libc = ctypes.CDLL(None, use_errno=True)
        # The "image" is the host's project environment: a volume over one of its ancestors (an
        # emptyDir at /tmp, with the clone under /tmp) would hide Python itself. Such a mount is
        # skipped: the container then shares that host directory, as every other path here.
        image = os.path.realpath(os.environ.get("VIRTUAL_ENV") or sys.prefix)
        mounts = []
        for m in spec["mounts"]:  # parents first: the agent sorts them by depth
            target = os.path.realpath(m["target"])
            if image == target or image.startswith(target.rstrip("/") + "/"):
                print(f"localcluster: not mounting {m['target']}: it would hide the image at {image}",
                      file=sys.stderr, flush=True)
                continue
            # Every source is opened before anything is mounted: an emptyDir at /tmp must not hide a
            # hostPath or volume directory that lives under the host's /tmp from the mounts after it.
            mounts.append((m, _source(m["source"])))
        for m, source in mounts:
            _mountpoint(source, m["target"], spec["mountpointRecord"])
            _mount(libc, source, m["target"], MS_BIND | MS_REC)
            if m.get("readOnly"):
                _mount(libc, None, m["target"], MS_BIND | MS_REMOUNT | MS_RDONLY)
        os.chdir(spec["workingDir"])
        argv = spec["argv"]
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            raise OSError(e.errno, f'exec "{argv[0]}": {e.strerror} (PATH={os.environ.get("PATH", "")})') from None
    except (OSError, KeyError, IndexError) as e:
        message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        with open(spec_path + ".start-error", "w") as f:
            f.write(message)
        print(f"localcluster: cannot start container: {message}", file=sys.stderr, flush=True)
        sys.exit(128)


if __name__ == "__main__":
    main(sys.argv[1])
