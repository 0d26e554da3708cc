"""Render deploy/argocd/argocd-cm-patch.yaml from deploy/argocd/health.lua (run by `make docs`).

The ConfigMap snippet embeds the health script verbatim as a YAML block scalar; generating it
keeps the two from drifting (a unit test fails when the committed snippet is stale).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dstj_api.contract import GROUP, KIND

ROOT = Path(__file__).resolve().parents[1]
HEALTH_LUA = ROOT / "deploy/argocd/health.lua"
PATCH = ROOT / "deploy/argocd/argocd-cm-patch.yaml"
KEY = f"resource.customizations.health.{GROUP}_{KIND}"

_HEADER = f"""\
# Generated from deploy/argocd/health.lua by `make docs`. Do not edit.
#
# Argo CD's health check for DeepSeekTrainingJob: merge into the argocd-cm ConfigMap, e.g.
#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm-patch.yaml
# or copy the data key into the argocd-cm your Argo CD installation manages (Helm values
# `configs.cm`, or the Argo CD operator's `resourceHealthChecks`).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
  {KEY}: |
"""


def render(script: str) -> str:
    """The ConfigMap snippet with `script` as a literal block (blank lines stay empty)."""
    body = "".join(f"    {line}" if line.strip() else "\n" for line in script.splitlines(keepends=True))
    return _HEADER + body


if __name__ == "__main__":
    text = render(HEALTH_LUA.read_text())
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if PATCH.read_text() == text else f"{PATCH} is stale: run `make docs`")
    PATCH.write_text(text)
