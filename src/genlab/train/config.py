"""Training options: one dataclass for every model, the same words in Python and on the CLI."""

from __future__ import annotations

import dataclasses
import importlib.util

from genlab.config import DEFAULT_BATCH_SIZE, Config


def tensorboard_installed() -> bool:
    """Whether the optional `tensorboard` package is there (`pip install genlab[tensorboard]`)."""
    return importlib.util.find_spec("tensorboard") is not None


@dataclasses.dataclass
class TrainConfig(Config):
    """Options of the training engine (`genlab.fit(model, data, **fields)`, CLI `--max-steps` etc.).

    batch_size is the global batch: with `torchrun` each of W processes takes batch_size / W
    samples and DDP averages the gradients, so the update equals one process's on the same batch.
    grad_clip=0 and ema_decay=0 switch those off; sample_every/checkpoint_every=0 mean "at the end".
    num_samples: images in each sample grid; pictures of 2-D data draw at least 2,000 points.
    init: a run directory to start from (fine-tuning; `genlab.train.finetune`): its (EMA) weights,
    a fresh optimizer and schedule. freeze: parameter-name prefixes held fixed (e.g. "encoder").
    lora_rank: r > 0 trains low-rank adapters on every linear and convolution layer and freezes the
    rest (`genlab.nn.lora`; lora_alpha: the update's scale alpha / r, 0 meaning alpha = r); the
    saved weights have the adapters merged.
    tensorboard: also log to RUN/tensorboard; the default is on where the tensorboard package is
    installed and off (silently) where not; asked for without the package, training says so once.
    """

    max_steps: int = 2000
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = True
    device: str = "auto"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    sample_every: int = 500
    num_samples: int = 64
    val_batches: int = 4
    progress: bool = True
    tensorboard: bool = dataclasses.field(default_factory=tensorboard_installed)
    init: str | None = None
    freeze: tuple[str, ...] = ()
    lora_rank: int = 0
    lora_alpha: float = 0.0

    def validate(self) -> None:
        self._positive("max_steps", "batch_size", "lr", "grad_accum", "log_every", "num_samples")
        self._positive("weight_decay", "warmup_steps", "grad_clip", "checkpoint_every", "sample_every", "val_batches",
                       "lora_rank", "lora_alpha", allow_zero=True)
        self._in_range("ema_decay", 0.0, 0.999999)
        self._choice("lr_schedule", ("constant", "cosine", "linear"))
        self._choice("precision", ("fp32", "bf16", "fp16"))
        if self.batch_size % self.grad_accum:
            from genlab.errors import ConfigError

            raise ConfigError(
                f"TrainConfig.batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}; "
                "the global batch is split into grad_accum equal micro-batches"
            )
