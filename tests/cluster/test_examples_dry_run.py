"""The real API server accepts every example users copy (server-side dry run: schema, CEL, defaults).

Only kinds the local cluster serves are sent: DeepSeekTrainingJob (its CRD applied first) and the
built-in ones (HorizontalPodAutoscaler through autoscaling/v2). The Argo CD and Flux objects in
examples/gitops need those tools' CRDs; tests/unit/test_examples.py checks their wiring instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dstj_operator.crd import KIND
from dstj_operator.spec import DeepSeekTrainingJobSpec
from localcluster.kubectl import Kubectl
from tests.conftest import install_crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FILES = [pytest.param(p, id=p.name) for p in sorted(EXAMPLES.glob("*.yaml"))]


@pytest.fixture(scope="module")
def crd(kube: Kubectl) -> Iterator[Kubectl]:
    yield install_crd(kube)


def dry_run(kube: Kubectl, ns: str, *source: str) -> list[dict[str, Any]]:
    """`kubectl apply --dry-run=server` into `ns`; the objects as the API server would store them."""
    res = kube("apply", "--dry-run=server", "-n", ns, *source, "-o", "json", check=False)
    assert res.returncode == 0, f"the API server refused {' '.join(source)}: {res.stderr}"
    out = json.loads(res.stdout)
    return list(out["items"]) if out.get("kind") == "List" else [out]


@pytest.mark.parametrize("path", FILES)
def test_the_api_server_accepts_the_example(crd: Kubectl, ns: str, path: Path) -> None:
    sent = [d for d in yaml.safe_load_all(path.read_text()) if d]
    stored = dry_run(crd, ns, "-f", str(path))
    assert [o["kind"] for o in stored] == [d["kind"] for d in sent]
    for obj in stored:
        if obj["kind"] == KIND:  # what the operator will read: the spec after the server's defaults
            DeepSeekTrainingJobSpec.model_validate(obj["spec"])


def test_the_api_server_accepts_the_gitops_jobs_directory(crd: Kubectl, ns: str) -> None:
    stored = dry_run(crd, ns, "-k", str(EXAMPLES / "gitops/jobs"))
    assert {o["kind"] for o in stored} == {KIND}


def trainer_as_read(spec: dict[str, Any]) -> dict[str, Any]:
    return DeepSeekTrainingJobSpec.model_validate(spec).trainer.model_dump()


@pytest.mark.parametrize("path", [
    pytest.param(EXAMPLES / "moe-gpu.yaml", id="moe-gpu-spells-out-its-model"),
    pytest.param(EXAMPLES / "moe-tiny.yaml", id="moe-tiny-uses-a-preset"),
])
def test_the_server_defaults_leave_the_trainer_the_file_describes(crd: Kubectl, ns: str,
                                                                   path: Path) -> None:
    sent = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == KIND)
    stored = dry_run(crd, ns, "-f", str(path))[0]
    assert trainer_as_read(stored["spec"]) == trainer_as_read(sent["spec"])
