"""Torch-free models shared by the operator and the trainer.

The trainer config, the membership the operator publishes and the progress report the trainer
writes back all live here, so the two sides meet only through validated data. This package must
never import torch, kopf, kubernetes, `dstj_operator` or `moe_trainer`.
"""

from dstj_api.contract import EXIT_CONFIG, EXIT_STOPPED
from dstj_api.errors import ConfigError, format_validation_error
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
    load_trainer_config,
    model_preset,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_STOPPED",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "Membership",
    "MoEConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "ProgressReport",
    "TrainConfig",
    "TrainerConfig",
    "format_validation_error",
    "load_trainer_config",
    "model_preset",
]
