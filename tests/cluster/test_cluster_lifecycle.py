"""``up`` is idempotent and ``down`` leaves nothing behind (on a second, private cluster).

This runs its own cluster in a temporary state directory, so it never stops a cluster a
developer (or the session fixture) is using; its ports are chosen free beside the default one.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from localcluster import controlplane, procs
from localcluster.state import StateDir

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (independent of our own records)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_up_twice_then_down_leaves_no_process_or_file_behind(bin_dir: Path, tmp_path: Path) -> None:
    sd = StateDir(tmp_path / "state")
    try:
        kubeconfig = controlplane.up(sd)
        pids = {name: pid for name, pid, _, _ in controlplane.status(sd)}

        start = time.monotonic()
        assert controlplane.up(sd) == kubeconfig
        assert time.monotonic() - start < 2.0, "a second up must find the running cluster"
        rows = controlplane.status(sd)
        assert all(alive and healthy for _, _, alive, healthy in rows), rows
        assert {name: pid for name, pid, _, _ in rows} == pids, "a second up must not restart anything"
        assert len(_processes_mentioning(str(sd.root))) == len(controlplane.COMPONENTS)
    finally:
        records = procs.load_all(sd.procs)
        stopped = controlplane.down(sd)

    assert stopped == len(controlplane.COMPONENTS)
    assert not any(procs.is_alive(r) for r in records)
    assert _processes_mentioning(str(sd.root)) == []
    assert not sd.root.exists()


def test_down_on_a_directory_that_is_not_a_cluster_refuses_to_delete_it(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")

    with pytest.raises(RuntimeError, match="does not look like"):
        controlplane.down(StateDir(precious))

    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_down_unmounts_a_bind_mount_in_the_state_dir_and_keeps_the_mounted_files(tmp_path: Path) -> None:
    source = tmp_path / "hostpath"
    source.mkdir()
    (source / "data.txt").write_text("user data")
    sd = StateDir(tmp_path / "state")
    sd.ensure()
    target = sd.root / "pods" / "p1" / "volume"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)

    controlplane.down(sd)

    assert not sd.root.exists()
    assert (source / "data.txt").read_text() == "user data"
    assert str(sd.root) not in Path("/proc/self/mountinfo").read_text()
