"""The names the operator and the trainer both rely on: one definition, imported by both sides.

Users' manifests, dashboards and reviewers' checks rely on these too (the API group, the labels, the
exit codes); change one only with a migration. Torch-free, like the rest of `dstj_api`.
"""

from __future__ import annotations

from typing import Final

# The custom resource.
GROUP: Final = "training.deepseek.dev"
VERSION: Final = "v1alpha1"
KIND: Final = "DeepSeekTrainingJob"
PLURAL: Final = "deepseektrainingjobs"
SHORT_NAME: Final = "dstj"

# Labels on every child of a job.
JOB_LABEL: Final = f"{GROUP}/job"
"""The job's name, on every child object."""
INDEX_LABEL: Final = f"{GROUP}/index"
"""A worker pod's index (0 .. replicas-1)."""
ROLE_LABEL: Final = f"{GROUP}/role"
"""What a child is: worker, rendezvous, config, progress, ..."""
TEMPLATE_ANNOTATION: Final = f"{GROUP}/pod-template"
"""On a worker pod: the digest of the spec fields it was built from that a rolled edit changes (image, pod,
devicesPerWorker). Pods of one generation all carry the same."""

# Environment of a worker pod, set by the operator and read by the trainer.
ENV_MEMBER_ID: Final = "DSTJ_MEMBER_ID"
"""The worker's id in the membership (its pod name)."""
ENV_MEMBERSHIP: Final = "DSTJ_MEMBERSHIP"
"""Where membership is read: `k8s:NAMESPACE/JOB` (the job's status) or `file:PATH`."""
ENV_PROGRESS: Final = "DSTJ_PROGRESS"
"""Where rank 0 writes its progress report: `k8s:NAMESPACE/CONFIGMAP` or `file:PATH`."""
ENV_RDZV_ENDPOINT: Final = "DSTJ_RDZV_ENDPOINT"
"""host:port of the job's rendezvous store."""
ENV_RUN_ID: Final = "DSTJ_RUN_ID"
"""The rendezvous key prefix (the job's uid: a re-created job never meets the old one's keys)."""
ENV_READY_PROBE: Final = "DSTJ_READY_PROBE"
"""`1`: the worker writes its readiness file once it can join a group."""
ENV_LENIENT_CONFIG: Final = "DSTJ_LENIENT_CONFIG"
"""`1`: the `--config` file was rendered by the operator (validated against its model, which may be newer):
the worker ignores fields it does not know instead of refusing the config. Unset: a user's file, read strictly."""
ENV_CONFIG: Final = "DSTJ_CONFIG"
"""Where a worker reads the current trainer config when a generation names another than the one it runs:
`k8s:NAMESPACE/CONFIGMAP` (key `CONFIG_KEY`) or `file:PATH`; unset: its `--config` file, read again."""
CONFIG_KEY: Final = "trainer.json"
"""The key of the trainer-config ConfigMap's data (and the file name it is mounted as)."""
ENV_TERMINATION_LOG: Final = "DSTJ_TERMINATION_LOG"
"""Where the worker writes its termination message when this is set (the local cluster's process nodes set it:
their containers share one file system); else `/dev/termination-log` when writable (a kubelet's default path)."""

# The progress report.
PROGRESS_KEY: Final = "report"
"""The key of the progress ConfigMap's data that holds the JSON report."""

# Exit codes of a worker process.
EXIT_STOPPED: Final = 83
"""Stopped on request (preemption or a new generation) after checkpointing: a preemption, never a crash."""
EXIT_CONFIG: Final = 78
"""A setting only run time could check is wrong (a missing fsspec backend, an empty resumeFrom, checkpoint
storage the workers do not share): retrying cannot help. The worker writes what to change into its termination
message; the operator fails the job with that message instead of spending the crash budget (78 is EX_CONFIG)."""
