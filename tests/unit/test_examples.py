"""The manifests in examples/ stay valid against the API they show and wired the way their comments say.

Every DeepSeekTrainingJob under examples/ is validated by the operator's own spec model, so an
example can never drift from the API. (tests/cluster/test_examples_dry_run.py sends the same
files to a real API server.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dstj_operator.crd import GROUP, KIND, VERSION
from dstj_operator.spec import TRAINER_IMAGE, DeepSeekTrainingJobSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API_VERSION = f"{GROUP}/{VERSION}"


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of one file (empty ones dropped)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(EXAMPLES.rglob("*.yaml")) for d in documents(p)]


def the(kind: str, path: str, name: str | None = None) -> dict[str, Any]:
    """The one document of `kind` (and `name`) in examples/`path`."""
    found = [d for d in documents(EXAMPLES / path)
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{path}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


JOBS = [pytest.param(d, id=f"{p.relative_to(EXAMPLES)}:{d['metadata']['name']}")
        for p, d in all_documents() if d.get("kind") == KIND]


def test_the_examples_users_copy_are_all_there() -> None:
    names = {str(p.relative_to(EXAMPLES)) for p, d in all_documents() if d.get("kind") == KIND}
    assert {"moe-tiny.yaml", "moe-gpu.yaml", "suspended-kueue.yaml", "gitops/jobs/moe-nightly.yaml"} <= names


@pytest.mark.parametrize("job", JOBS)
def test_every_example_job_is_a_valid_spec(job: dict[str, Any]) -> None:
    assert job["apiVersion"] == API_VERSION
    assert "namespace" not in job["metadata"], "examples take the namespace from kubectl -n or the GitOps tool"
    DeepSeekTrainingJobSpec.model_validate(job["spec"])


def test_the_trainer_image_default_is_this_release_s_as_the_chart_tags_the_operator_s() -> None:
    # A versioned tag: with `latest` the kubelet's default pull policy is Always, and a node that has
    # the image but no registry to ask fails the pull.
    chart = yaml.safe_load((EXAMPLES.parent / "charts" / "deepseek-operator" / "Chart.yaml").read_text())
    assert f"moe-trainer:{chart['appVersion']}" == TRAINER_IMAGE
    assert DeepSeekTrainingJobSpec.model_fields["image"].default == TRAINER_IMAGE


@pytest.mark.parametrize("job", JOBS)
def test_no_example_runs_a_latest_image(job: dict[str, Any]) -> None:
    image = job["spec"].get("image", TRAINER_IMAGE)
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def test_moe_tiny_runs_on_the_local_cluster_from_the_builtin_corpus() -> None:
    spec = DeepSeekTrainingJobSpec.model_validate(the(KIND, "moe-tiny.yaml")["spec"])
    assert (spec.replicas, spec.min_replicas, spec.max_replicas) == (3, 1, 4)
    assert (spec.image, spec.devices_per_worker) == ("moe-trainer:0.1.0", 0)
    assert (spec.trainer.data.source, spec.trainer.data.tokenizer) == ("builtin", "bytes")
    assert 60 <= spec.trainer.train.steps <= 120 and spec.trainer.checkpoint.interval == 10
    assert spec.checkpoint.host_path == "/tmp/dstj-checkpoints/moe-tiny"


def test_moe_gpu_asks_for_gpus_shared_storage_and_bf16() -> None:
    spec = DeepSeekTrainingJobSpec.model_validate(the(KIND, "moe-gpu.yaml")["spec"])
    assert spec.devices_per_worker == 8
    assert spec.pod.resources is not None and spec.pod.resources["limits"]["nvidia.com/gpu"] == 8
    assert any(t["key"] == "nvidia.com/gpu" for t in spec.pod.tolerations or [])
    assert spec.checkpoint.storage_class and not spec.checkpoint.delete_with_job
    assert spec.trainer.train.precision == "bf16"
    assert spec.trainer.model.model_dump() == type(spec.trainer.model)(preset="base").model_dump() | {"preset": None}


def test_the_queued_example_waits_suspended_in_a_kueue_queue() -> None:
    job = the(KIND, "suspended-kueue.yaml")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]


def _wave(app: dict[str, Any]) -> int:
    return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


def test_argo_cd_syncs_the_operator_chart_before_the_jobs() -> None:
    operator = the("Application", "gitops/argocd/apps/operator.yaml")
    jobs = the("Application", "gitops/argocd/apps/jobs.yaml")
    root = the("Application", "gitops/argocd/root.yaml")
    assert operator["spec"]["source"]["path"] == "charts/deepseek-operator"
    assert operator["spec"]["destination"]["namespace"] == "dstj-system"
    assert jobs["spec"]["source"]["path"] == "examples/gitops/jobs"
    assert root["spec"]["source"]["path"] == "examples/gitops/argocd/apps"
    assert _wave(operator) < _wave(jobs)


def test_flux_applies_the_jobs_only_after_the_operator_release() -> None:
    release = the("HelmRelease", "gitops/flux/operator/helmrelease.yaml")
    operator = the("Kustomization", "gitops/flux/sync.yaml", "dstj-operator")
    jobs = the("Kustomization", "gitops/flux/sync.yaml", "dstj-jobs")
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/deepseek-operator"
    assert operator["spec"]["path"] == "./examples/gitops/flux/operator" and operator["spec"]["wait"] is True
    assert jobs["spec"]["dependsOn"] == [{"name": "dstj-operator"}]
    assert jobs["spec"]["path"] == "./examples/gitops/jobs"


@pytest.mark.parametrize("kustomization", sorted(EXAMPLES.rglob("kustomization.yaml")),
                         ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_kustomization_lists_files_that_exist(kustomization: Path) -> None:
    for resource in the("Kustomization", str(kustomization.relative_to(EXAMPLES)))["resources"]:
        assert (kustomization.parent / resource).is_file(), f"{kustomization}: {resource} is missing"
