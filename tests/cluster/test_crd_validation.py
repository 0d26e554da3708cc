"""The real API server refuses bad DeepSeekTrainingJobs with a message that names the field.

Creates and updates run as server-side dry runs (`--dry-run=server`): the API server validates
them completely (schema, CEL) and stores nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from dstj_api.contract import GROUP, KIND, VERSION
from dstj_operator.crd import PLURAL, build_crd
from localcluster.kubectl import Kubectl
from tests.conftest import install_crd

NS = "crd-validation"
GOOD = "good"


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def _set(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


@pytest.fixture(scope="module")
def crd(kube: Kubectl) -> Iterator[Kubectl]:
    install_crd(kube)
    kube("create", "namespace", NS, check=False)
    yield kube
    kube("delete", "namespace", NS, "--wait=false", check=False)


def tiny(**model: Any) -> dict[str, Any]:
    """A trainer config on the tiny preset (nRouted 8, topK 2, dim 64, nHeads 4, maxSeqLen 128)."""
    moe = model.pop("moe", None)
    return {"model": {"preset": "tiny", **model, **({"moe": moe} if moe else {})}}


def bad(spec: dict[str, Any], field: str, message: str, id: str, name: str = "bad") -> Any:
    return pytest.param(name, spec, field, message, id=id)


BAD_CREATES = [
    # The cases under Why in issue 12: admitted before, failed later.
    bad({"trainer": tiny(moe={"topK": 9})}, "spec.trainer.model.moe.topK", "topK (9) must be <= nRouted (8)",
        id="top-k-above-experts"),
    bad({}, "metadata.name", "at most 44 characters", id="sixty-character-name", name="a" * 60),
    # Names: a worker's hostname <name>-worker-<index>-<suffix> must fit 63; Services refuse dots and digits first.
    bad({}, "metadata.name", "at most 44 characters", id="one-character-too-long", name="a" * 45),
    bad({}, "metadata.name", "a letter first", id="name-starts-with-a-digit", name="7b-moe"),
    bad({}, "metadata.name", "DNS-1035 label", id="name-with-a-dot", name="moe.v2"),
    # Routing (MoEConfig), resolved through the preset.
    bad({"trainer": {"model": {"preset": "small", "moe": {"nRouted": 2}}}}, "spec.trainer.model.moe.topK",
        "topK (4) must be <= nRouted (2)", id="preset-top-k-above-written-experts"),
    bad({"trainer": tiny(moe={"nGroups": 3})}, "spec.trainer.model.moe.nGroups", "nGroups (3) must divide nRouted (8)",
        id="groups-not-dividing-experts"),
    bad({"trainer": tiny(moe={"nGroups": 2, "topkGroups": 3})}, "spec.trainer.model.moe.topkGroups",
        "topkGroups (3) must be <= nGroups (2)", id="more-group-picks-than-groups"),
    bad({"trainer": {"model": {"preset": "base", "moe": {"topkGroups": 1, "topK": 9}}}},
        "spec.trainer.model.moe.topK", "topK (9) exceeds the experts reachable in topkGroups groups (8)",
        id="top-k-beyond-reachable-groups"),
    # Shapes (ModelConfig).
    bad({"trainer": tiny(nHeads=5)}, "spec.trainer.model.nHeads", "nHeads (5) must divide dim (64)",
        id="heads-not-dividing-dim"),
    bad({"trainer": tiny(dim=48, nHeads=16)}, "spec.trainer.model.nHeads", "even head size",
        id="odd-head-size"),
    bad({"trainer": tiny(nDenseLayers=3)}, "spec.trainer.model.nDenseLayers", "nDenseLayers (3) must be <= nLayers (2)",
        id="more-dense-layers-than-layers"),
    bad({"trainer": {"model": {"preset": "huge"}}}, "spec.trainer.model.preset", 'supported values: "tiny"',
        id="unknown-preset"),
    # Batch (TrainConfig), parallel (ParallelConfig), and across the trainer config (TrainerConfig).
    bad({"trainer": {"train": {"globalBatch": 10, "microBatch": 4}}}, "spec.trainer.train.microBatch",
        "microBatch (4) must divide globalBatch (10)", id="micro-batch-not-dividing"),
    bad({"trainer": {**tiny(), "train": {"seqLen": 256}}}, "spec.trainer.train.seqLen",
        "train.seqLen (256) exceeds model.maxSeqLen (128)", id="sequence-longer-than-the-preset-rope-tables"),
    bad({"trainer": {**tiny(vocabSize=255), "data": {"tokenizer": "bytes"}}}, "spec.trainer.model.vocabSize",
        "needs model.vocabSize >= 256 (got 255)", id="byte-tokenizer-with-a-small-vocabulary"),
    bad({"trainer": {"data": {"source": "path"}}}, "spec.trainer.data.path", "data.source=path needs data.path",
        id="path-source-without-path"),
    bad({"trainer": {"data": {"source": "path", "path": ""}}}, "spec.trainer.data.path",
        "data.source=path needs data.path", id="path-source-with-empty-path"),
    bad({"trainer": {"parallel": {"expertParallel": 0}}}, "spec.trainer.parallel.expertParallel",
        "expertParallel must be auto or >= 1 (got 0)", id="zero-expert-parallel"),
    bad({"trainer": {"parallel": {"expertParallel": "max"}}}, "spec.trainer.parallel.expertParallel",
        "expertParallel must be auto or an integer (got max)", id="expert-parallel-word-other-than-auto"),
    bad({"trainer": {**tiny(), "parallel": {"expertParallel": 3}}}, "spec.trainer.parallel.expertParallel",
        "parallel.expertParallel (3) must divide model.moe.nRouted (8)", id="expert-parallel-not-dividing-experts"),
    bad({"trainer": {**tiny(moe={"nGroups": 2}), "parallel": {"expertParallel": 4}}},
        "spec.trainer.parallel.expertParallel", "parallel.expertParallel (4) must divide model.moe.nGroups (2)",
        id="expert-parallel-splitting-expert-groups"),
    # The job spec.
    bad({"replicas": 2, "maxReplicas": 3, "trainer": {"parallel": {"expertParallel": 4}}},
        "spec.trainer.parallel.expertParallel", "(4) divides no world size of minReplicas (1) to maxReplicas (3)",
        id="expert-parallel-fitting-no-world-size"),
    bad({"replicas": 9, "maxReplicas": 8}, "spec.replicas", "replicas (9) <= maxReplicas (8)", id="replicas-above-max"),
    bad({"replicas": 2, "minReplicas": 3, "maxReplicas": 4}, "spec.replicas", "need minReplicas (3) <= replicas (2)",
        id="replicas-below-min"),
    bad({"checkpoint": {"pvc": "data", "hostPath": "/srv/ckpt"}}, "spec.checkpoint",
        "set at most one of pvc, hostPath and url", id="two-checkpoint-sources"),
    bad({"trainer": {"checkpoint": {"dir": "/srv/ckpt"}}}, "spec.trainer.checkpoint.dir",
        "is set by the operator to the job's checkpoint storage", id="checkpoint-dir-the-operator-sets"),
    bad({"autoscaling": {"allowedWorldSizes": [2, 16]}}, "spec.autoscaling.allowedWorldSizes",
        "every autoscaling.allowedWorldSizes entry must lie within minReplicas (1) to maxReplicas (8)",
        id="allowed-world-size-above-max"),
    bad({"replicas": 4, "autoscaling": {"allowedWorldSizes": [2, 3]}, "trainer": {"parallel": {"expertParallel": 2}}},
        "spec.autoscaling.allowedWorldSizes", "expert-parallel group spans (2)",
        id="allowed-world-size-without-layout"),
    bad({"autoscaling": {"allowedWorldSizes": [2], "powersOfTwo": True}}, "spec.autoscaling.powersOfTwo",
        "set allowedWorldSizes or powersOfTwo, not both", id="allowed-world-sizes-and-powers-of-two"),
    bad({"autoscaling": {"allowedWorldSizes": [2, 2]}}, "spec.autoscaling.allowedWorldSizes", "Duplicate value",
        id="allowed-world-size-twice"),
    # One field's own bounds and type (OpenAPI schema).
    bad({"minReplicas": 0}, "spec.minReplicas", "should be greater than or equal to 1", id="min-replicas-zero"),
    bad({"replicaz": 2}, "spec.replicaz", "unknown field", id="unknown-field"),
    bad({"replicas": "two"}, "spec.replicas", "must be of type integer", id="replicas-not-a-number"),
    bad({"trainer": tiny(moe={"scoreFunc": "relu"})}, "spec.trainer.model.moe.scoreFunc", "Unsupported value",
        id="unknown-score-function"),
    bad({"trainer": {"train": {"precision": "fp16"}}}, "spec.trainer.train.precision", "Unsupported value",
        id="unsupported-precision"),
    bad({"trainer": {"train": {"precision": "fp8"}}}, "spec.trainer.train.precision",
        "trainer.train.precision=fp8 needs GPUs (devicesPerWorker >= 1, got 0)", id="fp8-on-cpu-workers"),
    bad({"devicesPerWorker": 17}, "spec.devicesPerWorker", "less than or equal to 16", id="too-many-devices"),
    bad({"trainer": {"optim": {"lr": 0}}}, "spec.trainer.optim.lr", "greater than 0", id="zero-learning-rate"),
    bad({"faultPolicy": {"crashBudget": -1}}, "spec.faultPolicy.crashBudget", "greater than or equal to 0",
        id="negative-crash-budget"),
]


@pytest.mark.parametrize(("name", "spec", "field", "message"), BAD_CREATES)
def test_a_bad_manifest_is_refused_on_create_naming_the_field(crd: Kubectl, name: str, spec: dict[str, Any],
                                                               field: str, message: str) -> None:
    res = crd("create", "--dry-run=server", "-f", "-", stdin=json.dumps(job(name, **spec)), check=False)
    assert res.returncode != 0, "the API server accepted a bad manifest"
    assert field in res.stderr and message in res.stderr, res.stderr


GOOD_CREATES = [
    pytest.param("a" * 44, {}, id="name-at-the-length-limit"),
    pytest.param("large", {"trainer": {"model": {"preset": "large"}, "train": {"seqLen": 4096}}},
                 id="sequence-within-the-preset-rope-tables"),
    pytest.param("ep-devices", {"replicas": 2, "maxReplicas": 3, "devicesPerWorker": 2,
                                "trainer": {"parallel": {"expertParallel": 4}}}, id="expert-parallel-over-devices"),
    pytest.param("null-preset", {"trainer": {"model": {"preset": None, "nHeads": 8}}}, id="null-preset-means-none"),
    pytest.param("base-groups", {"trainer": {"model": {"preset": "base", "moe": {"topK": 32}}}},
                 id="top-k-reaching-every-picked-group"),
]


@pytest.mark.parametrize(("name", "spec"), GOOD_CREATES)
def test_a_manifest_at_the_limits_is_admitted(crd: Kubectl, name: str, spec: dict[str, Any]) -> None:
    crd("create", "--dry-run=server", "-f", "-", stdin=json.dumps(job(name, **spec)))


@pytest.fixture(scope="module")
def good(crd: Kubectl) -> dict[str, Any]:
    """A stored job (2 of at most 4 workers, tiny preset) that each update below breaks in one way."""
    spec = {"replicas": 2, "maxReplicas": 4, "trainer": {"model": {"preset": "tiny", "dim": 64}}}
    crd("create", "-f", "-", stdin=json.dumps(job(GOOD, **spec)))
    stored: dict[str, Any] = json.loads(crd("get", PLURAL, GOOD, "-n", NS, "-o", "json").stdout)
    return stored


BAD_UPDATES = [
    pytest.param({"trainer.model.dim": 128}, "spec.trainer.model", "is immutable", id="model-changed"),
    pytest.param({"trainer.model.preset": "small"}, "spec.trainer.model", "is immutable", id="preset-changed"),
    pytest.param({"replicas": 20}, "spec.replicas", "replicas (20) <= maxReplicas (4)", id="scaled-above-max"),
    pytest.param({"maxReplicas": 1}, "spec.replicas", "replicas (2) <= maxReplicas (1)", id="max-lowered-below"),
    pytest.param({"rendezvous.port": 70000}, "spec.rendezvous.port", "less than or equal to 65535",
                 id="port-out-of-range"),
    pytest.param({"trainer.train.microBatch": 5}, "spec.trainer.train.microBatch",
                 "microBatch (5) must divide globalBatch (16)", id="micro-batch-changed-to-a-non-divisor"),
    pytest.param({"trainer.train.seqLen": 256}, "spec.trainer.train.seqLen",
                 "train.seqLen (256) exceeds model.maxSeqLen (128)", id="sequence-lengthened-past-the-model"),
    pytest.param({"trainer.parallel.expertParallel": 8}, "spec.trainer.parallel.expertParallel",
                 "divides no world size", id="expert-parallel-raised-past-the-bounds"),
    pytest.param({"trainer.data.source": "path"}, "spec.trainer.data.path", "needs data.path",
                 id="data-switched-to-path-without-one"),
    pytest.param({"checkpoint.pvc": "data", "checkpoint.url": "s3://b/run"}, "spec.checkpoint", "at most one of",
                 id="second-checkpoint-source-added"),
    # What the checkpoints and the sample stream depend on, and where the checkpoints live: refused, with what to
    # do instead (steps, the learning rate and the rest of the trainer config are live: docs/api.md's edit table).
    pytest.param({"trainer.train.globalBatch": 32}, "spec.trainer.train.globalBatch",
                 "cannot change on an existing job", id="global-batch-changed-on-a-running-job"),
    pytest.param({"trainer.train.seed": 7}, "spec.trainer.train.seed",
                 "create a new job with spec.checkpoint.resumeFrom", id="seed-changed"),
    pytest.param({"trainer.data.minChars": 10}, "spec.trainer.data", "exactly-once data across resizes",
                 id="data-filter-changed"),
    pytest.param({"checkpoint.url": "s3://bucket/elsewhere"}, "spec.checkpoint", "its checkpoints live in that storage",
                 id="checkpoint-storage-changed"),
]


@pytest.mark.parametrize(("changes", "field", "message"), BAD_UPDATES)
def test_a_bad_update_is_refused_naming_the_field(crd: Kubectl, good: dict[str, Any], changes: dict[str, Any],
                                                  field: str, message: str) -> None:
    update = good
    for path, value in changes.items():
        update = _set(update, f"spec.{path}", value)
    res = crd("replace", "--dry-run=server", "-f", "-", stdin=json.dumps(update), check=False)
    assert res.returncode != 0, "the API server accepted a bad update"
    assert field in res.stderr and message in res.stderr, res.stderr


@pytest.mark.parametrize("changes", [
    pytest.param({"trainer.train.steps": 500, "trainer.optim.lr": 0.01}, id="steps-and-learning-rate"),
    pytest.param({"trainer.parallel.expertParallel": 1, "trainer.checkpoint.interval": 7}, id="layout-and-interval"),
    pytest.param({"image": "moe-trainer:v2"}, id="image"),
])
def test_a_live_edit_is_accepted(crd: Kubectl, good: dict[str, Any], changes: dict[str, Any]) -> None:
    update = good
    for path, value in changes.items():
        update = _set(update, f"spec.{path}", value)
    crd("replace", "--dry-run=server", "-f", "-", stdin=json.dumps(update))


def test_defaults_are_filled_in_by_the_api_server(crd: Kubectl) -> None:
    out = crd("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(job("defaults")))
    spec = json.loads(out.stdout)["spec"]
    assert (spec["replicas"], spec["minReplicas"], spec["maxReplicas"]) == (2, 1, 8)
    assert spec["faultPolicy"]["crashBudget"] == 3
    assert spec["trainer"]["parallel"]["expertParallel"] == "auto"
    assert spec["trainer"]["model"] == {"preset": "tiny"}


def test_kubectl_scale_uses_the_scale_subresource(crd: Kubectl) -> None:
    crd("create", "-f", "-", stdin=json.dumps(job("scalable", replicas=2, maxReplicas=4)))
    crd("scale", f"{PLURAL}/scalable", "-n", NS, "--replicas=3")
    assert crd("get", PLURAL, "scalable", "-n", NS, "-o", "jsonpath={.spec.replicas}").stdout == "3"
    refused = crd("scale", f"{PLURAL}/scalable", "-n", NS, "--replicas=9", check=False)
    assert refused.returncode != 0 and "replicas (9) <= maxReplicas (4)" in refused.stderr


def _without_operator_set_rule(crd: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(crd)
    schema = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"]["spec"]["properties"]["trainer"]["properties"]["checkpoint"]
    node["x-kubernetes-validations"] = [r for r in node["x-kubernetes-validations"] if "has(self.dir)" not in r["rule"]]
    return out


def test_a_job_stored_before_the_checkpoint_dir_rule_can_still_be_edited_but_not_its_dir(crd: Kubectl) -> None:
    """The API server ratchets the rule with the node it sits on (`trainer.checkpoint`): a job an older CRD admitted
    with `trainer.checkpoint.dir` is not stuck (kubectl scale, an Argo CD sync of another field), yet its dir cannot
    be changed or set anew. A CRD of its own group, so the shared one is never swapped under other tests."""
    group = "ratchet.deepseek.dev"
    new = build_crd()
    new["metadata"] = {"name": f"{PLURAL}.{group}"}
    new["spec"]["group"] = group
    old = _without_operator_set_rule(new)
    obj = job("stored", replicas=2, maxReplicas=4, trainer={"checkpoint": {"dir": "/srv/old"}})
    obj["apiVersion"] = f"{group}/{VERSION}"
    try:
        crd("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(old))
        crd("wait", "--for=condition=Established", f"crd/{PLURAL}.{group}", "--timeout=30s")
        crd("create", "-f", "-", stdin=json.dumps(obj))
        crd("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(new))
        refused = crd("create", "--dry-run=server", "-f", "-", stdin=json.dumps({**obj, "metadata": {
            "name": "fresh", "namespace": NS}}), check=False)
        assert refused.returncode != 0 and "spec.trainer.checkpoint.dir" in refused.stderr, refused.stderr
        stored = json.loads(crd("get", f"{PLURAL}.{group}", "stored", "-n", NS, "-o", "json").stdout)
        crd("replace", "--dry-run=server", "-f", "-", stdin=json.dumps(_set(stored, "spec.replicas", 3)))
        moved = crd("replace", "--dry-run=server", "-f", "-",
                    stdin=json.dumps(_set(stored, "spec.trainer.checkpoint.dir", "/srv/new")), check=False)
        assert moved.returncode != 0 and "is set by the operator" in moved.stderr, moved.stderr
        dropped = copy.deepcopy(stored)
        del dropped["spec"]["trainer"]["checkpoint"]["dir"]
        crd("replace", "--dry-run=server", "-f", "-", stdin=json.dumps(dropped))
    finally:
        crd("delete", "crd", f"{PLURAL}.{group}", "--wait=false", check=False)
