"""Find and undo mounts under a directory before it is deleted.

Pods of the process nodes may get bind mounts (hostPath, volumes) somewhere under the state
directory. Deleting a directory tree that still holds a bind mount deletes the files of the
mount's source, such as a user's hostPath directory. So ``down`` unmounts everything below the
state directory first, and refuses to delete anything while a mount remains.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _unescape(field: str) -> str:
    """Decode mountinfo's octal escapes (a space is written ``\\040``)."""
    return field.encode().decode("unicode_escape")


def mounts_under(root: Path) -> list[Path]:
    """Return the mount points at or below ``root``, deepest first (the order to unmount)."""
    root = root.resolve()
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        point = Path(_unescape(line.split()[4]))
        if point == root or root in point.parents:
            found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(root: Path) -> None:
    """Unmount every mount at or below ``root``; raise if any remains afterwards."""
    for point in mounts_under(root):
        # Lazy unmount: a process we could not stop must not keep the tree pinned forever.
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
    left = mounts_under(root)
    if left:
        raise RuntimeError(f"could not unmount {', '.join(map(str, left))}; not deleting {root}")
