"""Data that scales: a newcomer's start and a worker's memory with a corpus 100x the built-in one, before and after
the token arrays were shared and memory-mapped.

The corpus is the built-in one's documents written 100 times to a .jsonl file (`data.source: path`,
`data.dedup: false`, or the copies would be removed as duplicates), BPE-tokenized for the tiny preset.
- once per job: the first generation's build into `<checkpoint.dir>/data` (clean, train BPE, tokenize, write).
- before: every worker read the arrays into its own memory (`np.load` whole) from a cache on its own machine;
  a newcomer on a machine without it cleaned and tokenized the corpus itself (the once-per-job time, again).
- after: every worker, a newcomer included, maps the arrays the first generation wrote (`mmap_mode="r"`).
A newcomer is a fresh Python process: time from its start to the data ready and to its first optimizer step
(tiny preset, one process), its RSS and PSS (from /proc/self/smaps_rollup) after that step, and after touching
every token once (an epoch's reads), with two such workers running at once so PSS shows the shared pages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COPIES = 100
MIB = 2**20


def _config(corpus: Path, ckpt: Path) -> dict[str, Any]:
    return {"model": {"preset": "tiny"}, "train": {"steps": 1, "globalBatch": 16, "microBatch": 16, "seqLen": 64},
            "data": {"source": "path", "path": str(corpus), "dedup": False}, "checkpoint": {"dir": str(ckpt)}}


def _write_corpus(path: Path) -> int:
    from moe_trainer.data.corpus import builtin_documents

    lines = [json.dumps({"text": doc}) + "\n" for doc in builtin_documents()]
    with path.open("w") as f:
        for _ in range(COPIES):
            f.writelines(lines)
    return path.stat().st_size


def _memory() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) * 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"]}


def _meet(sync: Path, name: str) -> None:
    """Wait until both workers got here."""
    (sync / f"{name}-{os.getpid()}").touch()
    while len(list(sync.glob(f"{name}-*"))) < 2:
        time.sleep(0.05)


def _worker(config: str, mode: str, started: float, sync_dir: str) -> None:
    """One newcomer (run in its own process); prints its timings and memory as JSON."""
    import numpy as np

    from dstj_api import load_trainer_config
    from moe_trainer.runtime.assembly import prepare, shared_data_dir
    from moe_trainer.training.trainer import Trainer

    cfg = load_trainer_config(json.loads(config))
    data_start = time.time()
    train, held, info = prepare(cfg)
    if mode == "before":  # what every worker did: the whole arrays in its own memory
        root = next((shared_data_dir(cfg) or Path()).glob("*/info.json")).parent
        train.tokens, held.tokens = np.load(root / "train.npy"), np.load(root / "eval.npy")
    ready, data_secs = time.time() - started, time.time() - data_start
    trainer = Trainer(cfg, data=(train, held, info))
    trainer.train_step()
    first_step, after_step = time.time() - started, _memory()
    sync = Path(sync_dir)
    _meet(sync, "stepped")  # both workers alive from here on: mapped pages are shared
    checksum = int(train.tokens.sum(dtype=np.int64))  # reads every token once
    epoch = _memory()
    _meet(sync, "read")
    print(json.dumps({"ready": ready, "data": data_secs, "first_step": first_step, "after_step": after_step,
                      "epoch": epoch, "checksum": checksum}))


def _two_newcomers(config: dict[str, Any], mode: str, workdir: Path) -> list[dict[str, Any]]:
    sync = Path(tempfile.mkdtemp(dir=workdir))
    procs = []
    for _ in range(2):
        started = time.time()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.data_scale", "worker", json.dumps(config), mode, repr(started),
             str(sync)], stdout=subprocess.PIPE, text=True))
    return [json.loads(p.communicate()[0].splitlines()[-1]) for p in procs]


def _build_once(config: dict[str, Any]) -> tuple[float, int]:
    """The first generation's build, in a fresh process: (seconds, peak RSS bytes)."""
    code = ("import json, resource, sys, time; from dstj_api import load_trainer_config; "
            "from moe_trainer.runtime.assembly import prepare; t = time.time(); "
            "prepare(load_trainer_config(json.loads(sys.argv[1]))); "
            "print(time.time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True, check=True)
    secs, peak = out.stdout.split()
    return float(secs), int(peak)


def run() -> dict[str, Any]:
    """Print and return the table."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus.jsonl"
        size = _write_corpus(corpus)
        config = _config(corpus, workdir / "ckpt")
        env_cache = os.environ.get("DSTJ_CACHE")
        os.environ["DSTJ_CACHE"] = str(workdir / "machine-cache")  # no machine cache to copy from: a cold build
        try:
            build_secs, build_peak = _build_once(config)
            info = json.loads(next((workdir / "ckpt" / "data").glob("*/info.json")).read_text())
            results = [(mode, _two_newcomers(config, mode, workdir)) for mode in ("before", "after", "before", "after")]
        finally:
            if env_cache is None:
                os.environ.pop("DSTJ_CACHE")
            else:
                os.environ["DSTJ_CACHE"] = env_cache
    array_mib = (info["train_tokens"] + info["eval_tokens"]) * 4 / MIB
    print(f"\n## Data at 100x the built-in corpus ({size / MIB:.0f} MiB of .jsonl, {info['train_tokens']:,} training "
          f"tokens, {array_mib:.0f} MiB of int32 arrays), tiny preset, 2 newcomers at once")
    print(f"tokenized once per job (first generation, into <checkpoint.dir>/data): {build_secs:.1f} s, "
          f"peak RSS {build_peak / MIB:.0f} MiB; before, a newcomer on a machine without the data paid this itself")
    print("| newcomer | start -> data ready s (of which the data) | start -> first step s | "
          "RSS / PSS after the step MiB | RSS / PSS after reading every token MiB |")
    print("|---|---|---|---|---|")
    for mode, runs in results:
        for r in runs:
            step, epoch = r["after_step"], r["epoch"]
            print(f"| {mode} | {r['ready']:.1f} ({r['data']:.2f}) | {r['first_step']:.1f} | {step['rss'] / MIB:.0f} / "
                  f"{step['pss'] / MIB:.0f} | {epoch['rss'] / MIB:.0f} / {epoch['pss'] / MIB:.0f} |")
    return {"build": (build_secs, build_peak), "newcomers": results, "array_mib": array_mib}


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
    else:
        run()
