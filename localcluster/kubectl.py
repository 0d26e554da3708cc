"""Run the cluster's own kubectl against a kubeconfig.

Tests, the demo and scripts all need "kubectl with this kubeconfig, fail loudly with its
stderr"; one small helper keeps them consistent and uses the kubectl built at the cluster's
version rather than whatever one is on PATH.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


@dataclass(frozen=True)
class Kubectl:
    """A kubeconfig and the directory holding the matching kubectl."""

    kubeconfig: Path
    bin_dir: Path

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS``; with ``check`` a non-zero exit raises KubectlError."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res
