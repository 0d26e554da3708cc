"""What an image means on a process node: the project's virtual environment, plus entry points.

There is no image to pull: every container runs on this machine's file system with the
project's virtual environment first on PATH, so ``python -m moe_trainer.train`` or
``torchrun`` in a pod's command runs the project's code as installed here, and ``sh``/``cat``
come from the host. The image name still matters in two ways:

* it is recorded in the container status (``image``, and ``imageID`` as ``localcluster://``
  plus the name), so the operator and users see what they asked for;
* the images a process node "has" are the repositories in ``ENTRYPOINTS`` (matched on the
  repository's last path component, tag and registry ignored); any other image cannot be pulled:
  the container waits with reason ``ErrImagePull``, then ``ImagePullBackOff``, as on a kubelet;
* when a container has no ``command``, the image's entry point comes from ``ENTRYPOINTS``, as an
  image's ENTRYPOINT would; ``args`` are appended.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Image repository name (last path component, no tag) -> entry point.
ENTRYPOINTS: dict[str, list[str]] = {
    "deepseek-operator": ["python", "-m", "dstj_operator"],
    "dstj-operator": ["python", "-m", "dstj_operator"],
    "moe-trainer": ["python", "-m", "moe_trainer.launch"],
    "dstj-trainer": ["python", "-m", "moe_trainer.launch"],
    "python": ["python"],
    "busybox": ["sh"],
    "pause": ["sleep", "infinity"],
}

#: The host's ordinary PATH, after the virtual environment's bin directory.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(ValueError):
    """The container can not be started from this image."""


class ImageNotFound(ImageError):
    """No such image on process nodes (a kubelet's failed pull)."""


def repository(image: str) -> str:
    """``registry:5000/org/name:tag@sha256:..`` -> ``name``."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def argv(image: str, command: list[str] | None, args: list[str] | None) -> list[str]:
    """The process's argv: ``command + args``, or the image's entry point + ``args``."""
    entry = ENTRYPOINTS.get(repository(image))
    if entry is None:
        raise ImageNotFound(f"failed to pull image {image!r}: not found (process nodes have the repositories "
                            f"{sorted(ENTRYPOINTS)})")
    return [*(command or entry), *(args or [])]


def base_env(python: Path, hostname: str) -> dict[str, str]:
    """The environment every container starts from, before the pod's own ``env``."""
    env = {
        "PATH": f"{python.parent}:{SYSTEM_PATH}",
        "HOME": "/root",
        "HOSTNAME": hostname,
        "VIRTUAL_ENV": str(python.parent.parent),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    return env


def image_id(image: str) -> str:
    """What the container status reports as ``imageID``."""
    return f"localcluster://{image}"
