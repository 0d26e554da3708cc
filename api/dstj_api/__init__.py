"""Torch-free models shared by the operator and the trainer.

The trainer config, the membership the operator publishes, the progress report the trainer
writes back, the names both sides rely on (`contract`) and the EP x DP layout (`layout`) all live
here, so the two sides meet only through validated data and one set of names. This package must
never import torch, kopf, kubernetes, `dstj_operator` or `moe_trainer`.
"""

from dstj_api.contract import EXIT_CONFIG, EXIT_STOPPED
from dstj_api.errors import ConfigError, format_validation_error
from dstj_api.layout import Layout, LayoutError, plan_layout
from dstj_api.lenient import read_lenient
from dstj_api.membership import Membership, ProgressReport
from dstj_api.trainer_config import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    MoEConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    TrainerConfig,
    config_digest,
    load_trainer_config,
    model_preset,
    parse_trainer_config,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_STOPPED",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "Layout",
    "LayoutError",
    "Membership",
    "MoEConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "ProgressReport",
    "TrainConfig",
    "TrainerConfig",
    "config_digest",
    "format_validation_error",
    "load_trainer_config",
    "model_preset",
    "parse_trainer_config",
    "plan_layout",
    "read_lenient",
]
