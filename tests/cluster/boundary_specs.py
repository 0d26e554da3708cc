"""Seeded job manifests at and around the boundary of every admission rule, for the agreement test.

Each field a rule reads is left out (so the preset or the default fills it) or set to a value just
below, at or just above where some rule flips. A case focuses on one rule: it writes most of that
rule's fields, a few others, over a preset or none. The values stay inside each field's own bounds
(but for a few), so the verdict mostly turns on the cross-field rules.
"""

from __future__ import annotations

import random
from typing import Any

from dstj_operator.naming import MAX_JOB_NAME_LENGTH

ABSENT = object()

#: Field path (dotted, camelCase, under `spec`) -> values around the rules' boundaries.
BOUNDARY_VALUES: dict[str, list[Any]] = {
    "trainer.model.dim": [48, 64, 96, 128, 256],
    "trainer.model.nHeads": [2, 3, 4, 8, 16],
    "trainer.model.nLayers": [1, 2, 4],
    "trainer.model.nDenseLayers": [0, 1, 2, 3, 5],
    "trainer.model.maxSeqLen": [32, 64, 128, 256],
    "trainer.model.vocabSize": [255, 256, 512],
    "trainer.model.moe.nRouted": [4, 6, 8, 16, 64],
    "trainer.model.moe.topK": [1, 2, 4, 6, 8, 9],
    "trainer.model.moe.nGroups": [1, 2, 3, 4, 8],
    "trainer.model.moe.topkGroups": [1, 2, 3, 4],
    "trainer.train.globalBatch": [12, 16],
    "trainer.train.microBatch": [3, 4, 5, 8],
    "trainer.train.seqLen": [64, 128, 129, 256, 257],
    "trainer.data.tokenizer": ["bpe", "bytes"],
    "trainer.data.source": ["builtin", "path"],
    "trainer.data.path": ["", None, "/data/corpus"],
    "trainer.parallel.expertParallel": ["auto", "all", 0, 1, 2, 3, 4, 8],
    "replicas": [1, 2, 3, 4, 8],  # with the bounds: EP fits at 1, 2, 3 or 4 workers (x devices) or none
    "minReplicas": [1, 2, 3, 4, 5],
    "maxReplicas": [1, 2, 3, 4, 7, 8],
    "devicesPerWorker": [0, 1, 2, 3, 4],
    "checkpoint.pvc": ["", None, "ckpt"],
    "checkpoint.hostPath": ["", None, "/srv/ckpt"],
    "checkpoint.url": ["", None, "s3://bucket/run"],
    "autoscaling.allowedWorldSizes": [None, [1], [2, 4], [3, 6], [2, 8], [5]],
    "autoscaling.powersOfTwo": [False, True],
}
PRESETS = [ABSENT, None, "tiny", "small", "base", "large"]  # None: written as null (no preset)
#: The fields each rule reads (a case writes most of one group).
FOCUS = [
    ["trainer.model.moe.nRouted", "trainer.model.moe.topK", "trainer.model.moe.nGroups",
     "trainer.model.moe.topkGroups"],
    ["trainer.model.dim", "trainer.model.nHeads", "trainer.model.nLayers", "trainer.model.nDenseLayers"],
    ["trainer.train.globalBatch", "trainer.train.microBatch"],
    ["trainer.train.seqLen", "trainer.model.maxSeqLen"],
    ["trainer.data.tokenizer", "trainer.model.vocabSize"],
    ["trainer.parallel.expertParallel", "trainer.model.moe.nRouted"],
    ["trainer.parallel.expertParallel", "replicas", "minReplicas", "maxReplicas", "devicesPerWorker"],
    ["trainer.data.source", "trainer.data.path"],
    ["checkpoint.pvc", "checkpoint.hostPath", "checkpoint.url"],
    ["replicas", "minReplicas", "maxReplicas"],
    ["autoscaling.allowedWorldSizes", "autoscaling.powersOfTwo", "minReplicas", "maxReplicas",
     "trainer.parallel.expertParallel", "devicesPerWorker"],
]


def _name(rng: random.Random, index: int) -> str:
    """Mostly valid unique names; some at, just under and just over the length limit, some malformed."""
    stem = f"b{index:03d}"
    kind = rng.random()
    if kind < 0.8:
        return stem
    length = MAX_JOB_NAME_LENGTH + rng.choice([-1, 0, 1, 2])
    if kind < 0.92:
        return stem + "-" + "x" * (length - len(stem) - 1)
    return rng.choice([f"{index}-starts-with-a-digit", f"{stem}.dotted", f"{stem}-"])


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def boundary_specs(seed: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` (name, spec) pairs, focused on each rule in turn."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        spec: dict[str, Any] = {}
        preset = rng.choice(PRESETS)
        if preset is not ABSENT:
            _put(spec, "trainer.model.preset", preset)
        focus = FOCUS[i % len(FOCUS)]
        for path, values in BOUNDARY_VALUES.items():
            if rng.random() < (0.7 if path in focus else 0.04):
                _put(spec, path, rng.choice(values))
        if "devicesPerWorker" in focus and rng.random() < 0.8:
            # Bounds that hold, so the verdict turns on whether EP fits a world size within them.
            low = rng.randint(1, 4)
            high = rng.randint(low, low + 3)
            spec.update(minReplicas=low, maxReplicas=high, replicas=rng.randint(low, high))
            _put(spec, "trainer.parallel.expertParallel", rng.choice([2, 4, 8]))
        out.append((_name(rng, i), spec))
    return out
