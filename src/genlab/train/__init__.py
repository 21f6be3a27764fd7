"""The one training engine (`fit`), its options (`TrainConfig`) and run directories."""

from genlab.train.config import TrainConfig
from genlab.models.base import StepContext
from genlab.train.engine import EngineStepContext, EpochSampler, Run, fit
from genlab.train.run import RunPaths, load_model, read_metrics, read_run_config, read_table_encoder

__all__ = ["EngineStepContext", "EpochSampler", "Run", "RunPaths", "StepContext", "TrainConfig", "fit", "load_model", "read_metrics", "read_run_config", "read_table_encoder"]
