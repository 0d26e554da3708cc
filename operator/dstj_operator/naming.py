"""The names of a job's children, and the longest job name for which every one of them is valid.

Every child's name is the job's name plus a tail (`-config`, `-worker-<index>-<suffix>`, ...). The
longest tail decides how long a job name may be: a worker pod's name is also its hostname, a DNS
label of at most 63 characters, and Services (`-rdzv`, `-workers`) are DNS-1035 labels (a letter
first, no dots). `MAX_JOB_NAME_LENGTH` is derived from the tails below, and `JOB_NAME_RULES` refuse a
longer or malformed name at admission (CEL on `metadata.name`), before any child is built.
"""

from __future__ import annotations

import secrets
from typing import Final

from dstj_api.rules import Matches, Rule, Size, all_of, f, violations
from dstj_operator.spec import MAX_REPLICAS

DNS_LABEL_MAX: Final = 63
"""Kubernetes' limit on a DNS label: a hostname, a Service name, a label value."""
DNS_1035_LABEL: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A Service name: lower-case letters, digits and '-', a letter first, no '-' last."""
SUFFIX_BYTES: Final = 3
"""Random bytes in a pod's suffix (shown as hex: 6 characters), unique per incarnation."""
MAX_WORKER_INDEX: Final = MAX_REPLICAS - 1
"""Worker indices run from 0 to replicas - 1."""

CHILD_TAILS: Final = {"config": "-config", "rdzv": "-rdzv", "workers": "-workers", "account": "-worker",
                      "progress": "-progress", "pvc": "-checkpoints", "ingress": "-rdzv-ingress"}
"""The tail of each child with a fixed name (the key is its role in `children.names`)."""


def new_suffix() -> str:
    """A fresh random pod-name suffix."""
    return secrets.token_hex(SUFFIX_BYTES)


def worker_name(job: str, index: int, suffix: str) -> str:
    """A worker pod's name, which is also its hostname."""
    return f"{job}-worker-{index}-{suffix}"


def rendezvous_pod_name(job: str, suffix: str) -> str:
    """The rendezvous store pod's name."""
    return f"{job}{CHILD_TAILS['rdzv']}-{suffix}"


def _longest_tail() -> int:
    suffix = "f" * (2 * SUFFIX_BYTES)
    derived = [worker_name("", MAX_WORKER_INDEX, suffix), rendezvous_pod_name("", suffix), *CHILD_TAILS.values()]
    return max(len(name) for name in derived)


MAX_JOB_NAME_LENGTH: Final = DNS_LABEL_MAX - _longest_tail()
"""The longest job name whose every child's name is a valid DNS label (44)."""

JOB_NAME_RULES: Final = (
    Rule("name", all_of(Size(f("name")) <= MAX_JOB_NAME_LENGTH, Matches(f("name"), DNS_1035_LABEL)),
         f"metadata.name ({{name}}) must be a DNS-1035 label (lower-case letters, digits and '-', a letter first) "
         f"of at most {MAX_JOB_NAME_LENGTH} characters, so that every child's name fits in {DNS_LABEL_MAX} "
         f"(the longest is a worker's hostname, <name>-worker-<index>-<suffix>); choose a shorter name"),
)


def job_name_problem(name: str) -> str | None:
    """Why a job may not have this name, or None (the same rule the API server applies)."""
    broken = violations(JOB_NAME_RULES, {"name": name})
    return broken[0] if broken else None

