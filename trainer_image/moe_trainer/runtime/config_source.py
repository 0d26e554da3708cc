"""Which trainer config a generation runs: the one its membership names, read again when it changed.

The operator names each generation's config by its digest (`Membership.configHash`). A worker that runs
another one (the job's spec was edited since it started) reads the current config before it joins: from
the job's config ConfigMap through the API in a pod (`DSTJ_CONFIG=k8s:NAMESPACE/NAME`), or its `--config`
file again in a local run. Nothing relies on a configMap volume being refreshed: a real kubelet refreshes
one about once a minute, and the local cluster's process nodes never do.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dstj_api import TrainerConfig, config_digest, parse_trainer_config
from dstj_api.contract import ENV_CONFIG

READ_EVERY_S = 0.5
"""How often the config is read again while the generation names one it has not got yet (an API read)."""


class ConfigSource(Protocol):
    """Reads the current trainer config's JSON text (None while it cannot be read)."""

    def read(self) -> str | None: ...


class FileConfigSource:
    """The config file, read again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        """The file's text, or None while it is absent."""
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None


def config_source(spec: str | None, config_path: str) -> ConfigSource:
    """The source `spec` names (`k8s:NAMESPACE/CONFIGMAP` or `file:PATH`), or the `--config` file when unset."""
    if spec and spec.startswith("k8s:"):
        from moe_trainer.runtime.k8s_membership import ConfigMapConfigSource

        return ConfigMapConfigSource(spec)
    return FileConfigSource(Path(spec.removeprefix("file:") if spec else config_path))


def config_source_from_env(config_path: str) -> ConfigSource:
    """The source named by DSTJ_CONFIG, else the `--config` file."""
    return config_source(os.environ.get(ENV_CONFIG), config_path)


@dataclass(slots=True)
class ConfigFollower:
    """The config this worker runs, and where it reads the current one."""

    cfg: TrainerConfig
    digest: str
    source: ConfigSource
    lenient: bool
    label: str = "trainer config"
    _next_read: float = field(default=0.0)

    @classmethod
    def from_text(cls, text: str, source: ConfigSource, label: str, lenient: bool) -> ConfigFollower:
        """Start from the config text this worker was started with (ConfigError when it is invalid)."""
        return cls(parse_trainer_config(text, label, lenient=lenient), config_digest(text), source, lenient, label)

    def for_generation(self, wanted: str | None) -> TrainerConfig | None:
        """The config a generation naming `wanted` runs: the current one when it matches (or the generation names
        none: an older operator), else the one read from the source once it has that digest; None until then.

        Raises ConfigError when the matching text does not parse (the operator renders only valid configs, so a
        trainer too old for them is what this says)."""
        if wanted is None or wanted == self.digest:
            return self.cfg
        now = time.monotonic()
        if now < self._next_read:
            return None
        self._next_read = now + READ_EVERY_S
        text = self.source.read()
        if text is None or config_digest(text) != wanted:
            return None
        self.cfg, self.digest = parse_trainer_config(text, self.label, lenient=self.lenient), wanted
        return self.cfg
