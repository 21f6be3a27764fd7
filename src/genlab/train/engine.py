"""The one training engine: devices, precision, compile, accumulation, clipping, EMA, schedules,
checkpoints, logging and DDP, written once for every model.

A model brings `loss(batch)` (or, with several players, `training_step(batch, ctx)`); `fit` does the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genlab import registry
from genlab.data.dataset import Batch, Dataset
from genlab.errors import ArgumentTypeError, ConfigError, DataError, GenlabError, RunError, RunNotFoundError, TrainingError, TrainingWarning
from genlab.files import atomic_write, remove_stale_temporaries
from genlab.models.base import GenerativeModel, Loss, StepContext
from genlab.nn.lora import add_lora, merge_lora_, plain_state_dict
from genlab.nn.presets import saved_config_values
from genlab.train import distributed
from genlab.train.checkpoint import load_state, save_torch, save_weights, save_yaml
from genlab.train.config import TrainConfig
from genlab.train.distributed import DistInfo
from genlab.train.finetune import freeze, load_initial_weights
from genlab.train.run import RunPaths, read_metrics, read_run_config, write_table_encoder

POINTS_SHOWN = 2000  # samples drawn for the pictures of 2-D data (image grids use cfg.num_samples)
# a logged loss this many times its scale above the lowest one so far has diverged (warned once per factor)
LOSS_GROWTH_WARNING = 1000.0

# Options a resumed run cannot change, and why; every other TrainConfig option given on resume is
# honoured from the checkpoint's step on and recorded in config.yaml.
FIXED_ON_RESUME = {
    "batch_size": "the data order and the optimizer's moments follow the batch size",
    "seed": "the seed fixes the data order and the random streams the checkpoint continues",
    "weight_decay": "each optimizer parameter group keeps the weight decay it was built with",
    "ema_decay": "switching the EMA on or off would leave ema.safetensors out of step with the model",
    "init": "a resumed run continues from its own checkpoint, not from the run it started from",
    "freeze": "the optimizer's state covers the parameters that were trainable",
    "lora_rank": "the checkpoint holds adapters of the run's rank",
    "lora_alpha": "the adapters were trained at the run's scale",
}


@dataclasses.dataclass
class Run:
    """What `fit` returns: the trained model, its EMA copy, the logged history and where files went."""

    model: GenerativeModel
    ema: GenerativeModel | None
    step: int
    history: list[dict[str, Any]]
    config: TrainConfig
    out: Path | None = None

    @property
    def sampling_model(self) -> GenerativeModel:
        """The EMA weights when kept (usually the better sampler), else the trained weights."""
        return self.ema if self.ema is not None else self.model

    @property
    def paths(self) -> RunPaths | None:
        return None if self.out is None else RunPaths(self.out)


class EpochSampler:
    """Shuffle without replacement, a fresh seeded permutation each epoch; the remainder is dropped.

    Its state (epoch, cursor) resumes the exact data order. Every process draws the same global
    batch and takes its own slice of it.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.cursor = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next(self) -> Tensor:
        if self.cursor + self.batch_size > self.n:
            self.epoch, self.cursor = self.epoch + 1, 0
            self._perm = self._permutation()
        idx = self._perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._perm = self._permutation()


class EngineStepContext(StepContext):
    """The engine's `genlab.models.base.StepContext`: optimizer steps with its precision, clipping,
    schedules and (under DDP) gradient averaging."""

    def __init__(self, engine: "_Engine") -> None:
        self._engine = engine
        self.optimizers = engine.optimizers
        self.step = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        return self._engine.autocast()

    def backward(self, loss: Tensor) -> None:
        self._engine.scaler.scale(loss).backward()

    def optimizer_step(self, name: str) -> None:
        self._engine.optimizer_step(name, reduce_gradients=self._engine.dist.enabled)


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress  # linear

    return factor


def _on_device(data: Dataset, device: torch.device) -> Dataset:
    """A copy of the data living on `device`, so batches are gathered there without host copies."""
    if data.storage.device == device:
        return data
    labels = None if data.labels is None else data.labels.to(device)
    return Dataset(data.storage.to(device), data.spec, labels, source=data.source)


def _nonfinite_term(loss: Loss) -> str:
    for name, value in loss.terms.items():
        if not torch.isfinite(value).all():
            return f"term '{name}' = {value.detach().float().item():g}"
    return f"total = {loss.total.detach().float().item():g}"


class _Engine:
    def __init__(self, model: GenerativeModel, data: Dataset, cfg: TrainConfig, out: Path | None, resume: bool) -> None:
        self.model, self.cfg, self.out = model, cfg, out
        self.paths = None if out is None else RunPaths(out)
        if cfg.device != "auto":
            distributed.check_device(cfg.device)
        self.dist: DistInfo = distributed.init_distributed(cfg.device)
        self.device = distributed.resolve_device(cfg.device, self.dist)
        self._check_data(model, data)
        self.data = data
        self.train_set = _on_device(data.split("train"), self.device)
        self.val_set = _on_device(data.split("val"), self.device) if "val" in data.split_names else None

        per_process = cfg.batch_size // self.dist.world_size
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"batch_size={cfg.batch_size} does not split over {self.dist.world_size} processes; use a multiple of {self.dist.world_size}")
        self.batch_size = min(cfg.batch_size, len(self.train_set) // self.dist.world_size * self.dist.world_size)
        if self.batch_size < cfg.batch_size and self.dist.is_main:
            print(f"note: batch_size {cfg.batch_size} > {len(self.train_set)} training samples; using {self.batch_size}")
        self.per_process = per_process if self.batch_size == cfg.batch_size else self.batch_size // self.dist.world_size
        self.sampler = EpochSampler(len(self.train_set), self.batch_size, cfg.seed)

        self.channels_last = cfg.channels_last and self.device.type == "cuda" and model.spec.kind == "image"
        model.to(self.device)
        if not resume:
            if cfg.init is not None:  # before the data-dependent set-up, which keeps what the run's buffers record as done
                load_initial_weights(model, cfg.init)
            self._pretrain()
            # a generator of its own, so the training RNG stream is the same with or without it
            model.initialize_from_data(self.train_set, torch.Generator().manual_seed(cfg.seed))
        if cfg.freeze:
            freeze(model, cfg.freeze)
        if cfg.lora_rank:
            add_lora(model, cfg.lora_rank, cfg.lora_alpha or None)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizers = model.configure_optimizers(cfg.lr, cfg.weight_decay)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(cfg)) for k, o in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay > 0
            else None
        )
        self.custom = model.has_custom_step
        step_module: nn.Module = model
        if self.dist.enabled and not self.custom:
            ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = DistributedDataParallel(model, device_ids=ids)
        self.step_module = torch.compile(step_module) if cfg.compile else step_module
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: tuple[int, Path] | None = None
        self.config_pending = False
        self.in_step = False  # inside train_step: a warning belongs to step self.step + 1
        self.lowest_loss: float | None = None
        self.loss_warned_at: float | None = None
        self.tb = None

        if out is not None:
            self._prepare_run_dir(resume)

    # -- set-up ---------------------------------------------------------------------------
    def _pretrain(self) -> None:
        """Train the parts the model asks for first (`GenerativeModel.pretraining`), each in memory
        on this device and seed, with the run's progress bar setting."""
        for part, options in self.model.pretraining(self.train_set, self.cfg.max_steps):
            if self.dist.is_main and self.cfg.progress:
                print(f"training {part.name} first ({options.get('max_steps', 'its default')} steps), then {self.model.name}", flush=True)
            fit(part, self.train_set, **{"device": str(self.device), "seed": self.cfg.seed, "progress": self.cfg.progress and self.dist.is_main,
                                         "sample_every": 0, "checkpoint_every": 0, "tensorboard": False, **options})

    @staticmethod
    def _check_data(model: GenerativeModel, data: Dataset) -> None:
        if not isinstance(data, Dataset):
            raise DataError(f"fit() needs a genlab.data.Dataset, got {type(data).__name__}; use genlab.data.load(...)")
        sizes = {name: len(data.split(name)) for name in data.split_names}
        if len(sizes) > 1 and not all(sizes.values()):
            empty = [name for name, size in sizes.items() if not size]
            raise DataError(
                f"{data.spec.name!r} has {len(data)} sample{'s' if len(data) != 1 else ''}, too few to split: its "
                f"{' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty ({', '.join(f'{k} {v}' for k, v in sizes.items())}), "
                "so nothing would check the training; give at least 10 samples"
            )
        if tuple(data.spec.shape) != tuple(model.spec.shape):
            raise DataError(
                f"the model was built for samples of shape {model.spec.shape} but the data has {data.spec.shape}; "
                "create the model with data=<this dataset>"
            )

    def _prepare_run_dir(self, resume: bool) -> None:
        assert self.paths is not None
        if self.paths.root.exists() and not self.paths.root.is_dir():
            raise RunError(f"--out '{self.out}' is a file, not a folder; choose another --out (out=...)")
        has_state = self.paths.state.is_file()
        if has_state and not resume:
            raise RunError(
                f"'{self.out}' already holds a run; pass --resume (resume=True) to continue it, or choose another --out"
            )
        if resume and not has_state:
            raise RunNotFoundError(f"cannot resume: '{self.out}' has no checkpoint (state.pt); start it without --resume")
        if self.dist.is_main and self.paths.root.is_dir():
            remove_stale_temporaries(self.paths.root)  # left by a run killed mid-write
        if resume:
            self._load_checkpoint()
        elif self.dist.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self._write_config()
            write_table_encoder(self.data, self.paths)
            self.paths.metrics.unlink(missing_ok=True)
        if self.dist.is_main and self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.paths.root / "tensorboard"))
            except ImportError:  # on only where asked for: TrainConfig's default follows what is installed
                print("note: tensorboard=True (--tensorboard) needs the tensorboard package (pip install genlab[tensorboard]); training goes on without it")
                self.tb = None

    def _write_config(self) -> None:
        assert self.paths is not None
        save_yaml(
            {
                "model": self.model.name,
                "model_config": self.model.config.to_dict(),
                "data": self.data.source,
                "data_spec": self.model.spec.to_dict(),
                "train": self.cfg.to_dict(),
                "world_size": self.dist.world_size,
            },
            self.paths.config,
        )

    def _load_checkpoint(self) -> None:
        assert self.paths is not None
        saved = read_run_config(self.out)
        saved_name = registry.saved_entry(saved["model"], saved["model_config"]).name  # a run saved before a rename
        same_config = saved_name == self.model.name and saved_config_values(type(self.model.config), saved["model_config"]) == self.model.config.to_dict()
        if not same_config:
            raise RunError(
                f"cannot resume '{self.out}': it trained {saved['model']} with {saved['model_config']}, "
                f"not {self.model.name} with {self.model.config.to_dict()}; resume with the run's own model, or choose another --out"
            )
        if _comparable_source(saved["data"]) != _comparable_source(self.data.source):
            raise RunError(
                f"cannot resume '{self.out}': it trained on {saved['data']}, not {self.data.source}; another dataset or "
                "split would mix training data into validation and test. Resume without --data/--data-option, or choose another --out"
            )
        state = load_state(self.paths.state, self.device)
        if state["step"] > self.cfg.max_steps:
            raise ConfigError(
                f"cannot resume '{self.out}' to max_steps={self.cfg.max_steps}: it is at step {state['step']} already; "
                f"give --max-steps above {state['step']} to train on, or leave it out"
            )
        try:
            self._restore(state, saved_lr=state.get("train_lr", saved["train"].get("lr")))
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise RunError(f"{self.paths.state} does not fit the model in {self.paths.config} ({str(exc).splitlines()[0][:160]}); "
                           "restore the run's files together, or start a new run") from None  # fmt: skip
        self.last_checkpoint = (self.step, self.paths.state)
        # rows logged after the checkpoint belong to the lost tail of the interrupted run
        self.history = [row for row in read_metrics(self.out) if row["step"] <= self.step]
        if self.dist.is_main:
            self._rewrite_metrics()
        self.config_pending = True  # written with the next checkpoint: only options that took effect are recorded

    def _restore(self, state: dict[str, Any], saved_lr: float | None) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self._apply_learning_rate(saved_lr)
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"][self.dist.rank]["cpu"] if self.dist.rank < len(state["rng"]) else state["rng"][0]["cpu"])
        if torch.cuda.is_available() and state["rng"][0].get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"][min(self.dist.rank, len(state["rng"]) - 1)]["cuda"], self.device)
        self.step = int(state["step"])

    def _apply_learning_rate(self, saved_lr: float | None) -> None:
        """After a resume, the learning rate of this run's options: every base rate is scaled by
        lr / the checkpoint's lr (players keep their ratios, e.g. a TTUR discriminator's), and the
        current rate is the schedule's factor at the checkpoint's step, under this run's schedule,
        warm-up and max_steps."""
        scale = 1.0 if not saved_lr else self.cfg.lr / saved_lr
        for name, scheduler in self.schedulers.items():
            scheduler.base_lrs = [base * scale for base in scheduler.base_lrs]
            factors = [fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
            for group, base, factor in zip(self.optimizers[name].param_groups, scheduler.base_lrs, factors):
                group["initial_lr"], group["lr"] = base, base * factor
            scheduler._last_lr = [group["lr"] for group in self.optimizers[name].param_groups]

    # -- one step ---------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def batch(self, index: Tensor) -> Batch:
        b = self.train_set.get_batch(index.to(self.device))
        if self.channels_last and b.x.dim() == 4:
            b.x = b.x.contiguous(memory_format=torch.channels_last)
        return b

    def optimizer_step(self, name: str, *, reduce_gradients: bool = False) -> None:
        opt = self.optimizers[name]
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if reduce_gradients:
            distributed.all_reduce_mean_([p.grad for p in params], self.dist)
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(opt)
        opt.zero_grad(set_to_none=True)
        self.schedulers[name].step()

    def _raise_nonfinite(self, loss: Loss) -> None:
        self._stop_diverged(f"loss is not finite at step {self.step + 1} ({_nonfinite_term(loss)})")

    def _stop_diverged(self, what: str) -> None:
        """Stop a run whose numbers went non-finite, naming the last good checkpoint (one whose model
        gave finite losses; see `_checkpoint_problem`) and a recovery that works from it."""
        lr = _recovery_lr(self.cfg.lr, {**TrainConfig().to_dict(), **self.model.training_defaults()}["lr"])
        if self.last_checkpoint:
            where = f"last good checkpoint: {self.last_checkpoint[1]} (step {self.last_checkpoint[0]})"
            fix = (f"Resume from it with a smaller learning rate and gradient clipping: genlab train {self.model.name} "
                   f"--out {self.out} --resume --lr {lr:g} --grad-clip 1 (Python: genlab.fit(..., resume=True, lr={lr:g}, grad_clip=1))")  # fmt: skip
        else:
            where = "no checkpoint was written yet"
            fix = (f"Run the same command again with a smaller learning rate and gradient clipping: --lr {lr:g} --grad-clip 1 "
                   f"(Python: lr={lr:g}, grad_clip=1){'' if self.cfg.precision == 'fp32' else ', or --precision fp32'}")  # fmt: skip
        raise TrainingError(f"{what}; {where}. {fix}")

    def train_step(self, indices: Tensor) -> dict[str, Tensor]:
        """One optimizer update on a global batch; returns the batch's loss terms (detached)."""
        rank_slice = indices[self.dist.rank * self.per_process : (self.dist.rank + 1) * self.per_process]
        if self.custom:
            ctx = EngineStepContext(self)
            ctx.step = self.step
            loss = self.model.training_step(self.batch(rank_slice), ctx)
            if not torch.isfinite(loss.total):
                self._raise_nonfinite(loss)
            self.scaler.update()
            return {"loss": loss.total.detach(), **{k: v.detach() for k, v in loss.terms.items()}}

        accum = self.cfg.grad_accum
        micro = self.per_process // accum
        sums: dict[str, Tensor] = {}
        for i in range(accum):
            index = rank_slice[i * micro : (i + 1) * micro]
            sync = self.dist.enabled and i < accum - 1
            with (self.step_module.no_sync() if sync else contextlib.nullcontext()), self.autocast():
                loss = self.step_module(self.batch(index))
            if not torch.isfinite(loss.total):
                self._raise_nonfinite(loss)
            self.scaler.scale(loss.total / accum).backward()
            for k, v in {"loss": loss.total, **loss.terms}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / accum
        self.optimizer_step("model")
        self.scaler.update()
        return sums

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> Run:
        cfg = self.cfg
        if self.step == 0:
            torch.manual_seed(cfg.seed + self.dist.rank)
        self.model.train()
        bar = _progress(cfg, self.step, self.dist.is_main)
        interval: dict[str, Tensor] = {}
        interval_steps, t0 = 0, time.perf_counter()
        stack = contextlib.ExitStack()  # closed with the bar: the warnings' handler writes above it
        try:
            stack.enter_context(self._training_warnings(bar))
            while self.step < cfg.max_steps:
                self.in_step = True
                terms = self.train_step(self.sampler.next())
                self.step, self.in_step = self.step + 1, False
                if self.lowest_loss is None:  # the first step's loss: the scale a diverging run is measured against
                    self._watch_loss_growth(float(terms["loss"]))
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                for k, v in terms.items():
                    interval[k] = interval.get(k, 0.0) + v
                interval_steps += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    row = self._log_train(interval, interval_steps, time.perf_counter() - t0)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "split", "time")}, refresh=False)
                    interval, interval_steps, t0 = {}, 0, time.perf_counter()
                bar.update(1)
                last = self.step == cfg.max_steps
                if last:
                    self._fit_end()
                if self.out is not None and (last or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)):
                    self._validate()
                    self._save_checkpoint()
                if self.out is not None and self.dist.is_main and (last or (cfg.sample_every and self.step % cfg.sample_every == 0)):
                    self._write_samples(final=last)
            if self.out is not None and self.dist.is_main and not self.paths.final_samples.is_file():
                self._write_samples(final=True)  # a run killed after its last checkpoint, before its pictures
        finally:
            stack.close()
            bar.close()
            if self.tb is not None:
                self.tb.close()
        if self.out is not None and self.dist.is_main:
            self._write_curves()
        distributed.barrier(self.dist)
        # drop the DDP wrapper (and its reducer) while the process group it uses still exists
        self.step_module = self.model
        distributed.shutdown(self.dist)
        ema_model = self.ema.module if self.ema is not None else None
        if cfg.lora_rank:  # the models returned are the plain ones the run saved
            for trained in (self.model, ema_model):
                if trained is not None:
                    merge_lora_(trained).requires_grad_(True)
        if ema_model is not None:
            ema_model.eval()
        return Run(self.model, ema_model, self.step, self.history, cfg, self.out)

    @contextlib.contextmanager
    def _training_warnings(self, bar):
        """While training, a TrainingWarning (e.g. a GAN's "the discriminator overpowers the
        generator") is printed above the progress bar, not through it, and appended with its step to
        the run directory's warnings.log; other warnings pass to Python's usual handler."""
        with warnings.catch_warnings():
            warnings.simplefilter("always", TrainingWarning)
            show = warnings.showwarning

            def showwarning(message, category, filename, lineno, file=None, line=None):
                if not issubclass(category, TrainingWarning):
                    return show(message, category, filename, lineno, file, line)
                text = f"{category.__name__}: step {self.step + 1 if self.in_step else self.step}: {message}"
                if self.dist.is_main:
                    bar.write(text) if not bar.disable else show(message, category, filename, lineno, file, line)
                    if self.out is not None:
                        with open(self.paths.warnings_log, "a") as f:
                            f.write(f"{text}\n")

            warnings.showwarning = showwarning
            yield

    def _fit_end(self) -> None:
        """`on_fit_end` of the trained model and of its EMA copy (each fits from its own weights)."""
        for model in (self.model, None if self.ema is None else self.ema.module):
            if model is not None:
                model.on_fit_end(self.train_set, torch.Generator().manual_seed(self.cfg.seed))

    # -- logging, checkpoints, pictures ---------------------------------------------------------
    def _log_train(self, interval: dict[str, Tensor], steps: int, seconds: float) -> dict[str, Any]:
        names = sorted(interval)
        means = torch.stack([interval[k] / steps for k in names])
        distributed.all_reduce_mean_([means], self.dist)
        row: dict[str, Any] = {"step": self.step, "split": "train"}
        row.update({k: float(v) for k, v in zip(names, means.tolist())})
        row["lr"] = self.optimizers[next(iter(self.optimizers))].param_groups[0]["lr"]
        row["examples_per_s"] = self.batch_size * steps / max(seconds, 1e-9)
        self._record(row)
        self._watch_loss_growth(row["loss"])
        return row

    def _watch_loss_growth(self, loss: float) -> None:
        """Warn (bar and warnings.log) when the logged loss has grown LOSS_GROWTH_WARNING times its
        scale above the lowest logged so far: a diverging run, whose loss can stay finite for long."""
        if self.lowest_loss is None or loss < self.lowest_loss:
            self.lowest_loss = loss
            return
        growth = (loss - self.lowest_loss) / max(abs(self.lowest_loss), 1.0)
        if growth >= LOSS_GROWTH_WARNING * (self.loss_warned_at or 1.0):
            self.loss_warned_at = growth
            warnings.warn(
                f"the loss grew from {self.lowest_loss:.4g} to {loss:.4g}: training is diverging. Lower --lr "
                f"(now {self.cfg.lr:g}), add --grad-clip 1, or resume from an earlier checkpoint",
                TrainingWarning, stacklevel=2,
            )  # fmt: skip

    def _record(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.out is None or not self.dist.is_main:
            return
        with open(self.paths.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def _rewrite_metrics(self) -> None:
        with open(self.paths.metrics, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in self.history)

    @torch.no_grad()
    def _validate(self) -> None:
        if self.val_set is None or self.cfg.val_batches == 0 or not self.dist.is_main:
            return
        was_training = self.model.training
        self.model.eval()
        n = min(len(self.val_set), self.cfg.val_batches * self.per_process)
        sums: dict[str, float] = {}
        batches = 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)  # the same noise at every evaluation
            for start in range(0, n, self.per_process):
                index = torch.arange(start, min(n, start + self.per_process), device=self.device)
                with self.autocast():
                    loss = self.model.loss(self.val_set.get_batch(index))
                for k, v in {"loss": loss.total, **loss.terms}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                batches += 1
        self.model.train(was_training)
        self._record({"step": self.step, "split": "val", **{k: v / batches for k, v in sums.items()}})

    def _save_checkpoint(self) -> None:
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        rngs = [rng]
        if self.dist.enabled:
            rngs = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rngs, rng)
        problem = self._checkpoint_problem()
        if problem:
            self._stop_diverged(f"after step {self.step} {problem}, so it was not saved")
        if not self.dist.is_main:
            return
        state = {
            "step": self.step,
            "train_lr": self.cfg.lr,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rngs,
        }
        meta = {"model": self.model.name, "step": str(self.step)}
        if self.config_pending:
            self._write_config()
            self.config_pending = False
        # adapters merged: the weights files hold the plain model, which genlab.load reads (state.pt keeps them apart)
        save_weights(self.model, self.paths.weights, meta, state=plain_state_dict(self.model))
        if self.ema is not None:
            save_weights(self.ema.module, self.paths.ema_weights, meta, state=plain_state_dict(self.ema.module))
        save_torch(state, self.paths.state)  # written last: it marks the checkpoint complete
        self.last_checkpoint = (self.step, self.paths.state)

    @torch.no_grad()
    def _checkpoint_problem(self) -> str | None:
        """Why the weights must not become the checkpoint, or None: a checkpoint is good only if every
        weight (of the model and its EMA copy) is finite and the model gives finite losses on a
        held-out batch (a training batch where the data has no validation split)."""
        for label, module in (("model", self.model), ("EMA model", None if self.ema is None else self.ema.module)):
            if module is not None and not all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()):
                return f"the {label}'s weights are not finite"
        reference = self.val_set if self.val_set is not None else self.train_set
        index = torch.arange(min(len(reference), self.per_process), device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), self.autocast():
                torch.manual_seed(self.cfg.seed)
                loss = self.model.loss(reference.get_batch(index))
        finally:
            self.model.train(was_training)
        if not all(torch.isfinite(v).all() for v in (loss.total, *loss.terms.values())):
            return f"the model's loss on a {'validation' if self.val_set is not None else 'training'} batch is not finite ({_nonfinite_term(loss)})"
        return None

    def _samples_to_draw(self) -> int:
        """num_samples for an image grid; 2-D points get at least POINTS_SHOWN, so that the scatter
        (and its histogram) can be compared with the density by eye."""
        spec = self.model.spec
        if spec.kind == "vector" and spec.dim == 2:
            return max(self.cfg.num_samples, POINTS_SHOWN)
        return self.cfg.num_samples

    @torch.no_grad()
    def _write_samples(self, final: bool) -> None:
        from genlab.viz import plot_samples

        model = self.ema.module if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            generator = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
            samples = model.sample(self._samples_to_draw(), generator=generator).float().cpu()
        model.train(was_training)
        reference = self.val_set if self.val_set is not None else self.train_set
        shown = reference.get_batch(torch.arange(min(len(reference), 2000), device=reference.storage.device)).x.cpu()
        path = self.paths.final_samples if final else self.paths.samples_dir / f"step_{self.step:07d}.png"
        plot_samples(samples, self.model.spec, path, data=shown, true_log_prob=self.data.true_log_prob,
                     log_prob=_log_prob_or_none(model))
        if final:  # the same picture under the step's name: copied, not drawn again (a density grid is costly)
            self.paths.samples_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.paths.samples_dir / f"step_{self.step:07d}.png", lambda f: f.write(path.read_bytes()))
            model.eval()
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                write_model_figures(model, self.paths.root, torch.Generator(device="cpu").manual_seed(self.cfg.seed))
            model.train(was_training)

    def _write_curves(self) -> None:
        from genlab.viz import plot_training_curves

        if self.history:
            plot_training_curves(self.history, self.paths.curves)


def write_model_figures(model: GenerativeModel, directory: Path, generator: torch.Generator) -> list[Path]:
    """The pictures particular to a model's family, drawn into `directory`: trajectory.png where the
    model has a `trajectory`. Returns the paths written."""
    from genlab.viz import plot_trajectory

    path = model.trajectory(generator)
    if path is None:
        return []
    return [plot_trajectory(path.states, model.spec, Path(directory) / "trajectory.png", title=path.title)]


def _comparable_source(source: dict[str, Any]) -> dict[str, Any]:
    """A data source without where its files lie (`root`): a dataset moved to another folder is the same data."""
    return {k: v for k, v in source.items() if k != "root"}


def _recovery_lr(lr: float, default_lr: float) -> float:
    """The learning rate to suggest after a divergence: a tenth of the one that diverged, and no more
    than the model's default."""
    return min(lr / 10, default_lr)


def _log_prob_or_none(model: GenerativeModel) -> Callable[[Tensor], Tensor] | None:
    if not model.exact_likelihood:
        return None
    device = model.device

    def log_prob(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model.log_prob(x.to(device)).cpu()

    return log_prob


def _progress(cfg: TrainConfig, start: int, is_main: bool):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.max_steps, initial=start, disable=not (cfg.progress and is_main), unit="step", dynamic_ncols=True, leave=True)


def fit(
    model: GenerativeModel,
    data: Dataset,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    **options: Any,
) -> Run:
    """Train `model` on `data`'s train split with the options of `TrainConfig` as keywords;
    options not given come from the resumed run's config, then `model.training_defaults()`, then
    TrainConfig's defaults.

    out: run directory (config, weights, checkpoints, metrics, pictures); None keeps it in memory.
    resume: continue the run in `out` from its last checkpoint; the losses then match an
    uninterrupted run step for step (same seed, same data order, restored RNG and optimizer state).
    Under `torchrun`, every process calls `fit` and DDP keeps their weights equal.
    """
    if not isinstance(model, GenerativeModel):
        raise ArgumentTypeError(f"fit() trains a model from genlab.create(...), not {type(model).__name__} {model!r}"[:160]
                                + (f"; e.g. genlab.fit(genlab.create({model!r}, data=data), data)" if isinstance(model, str) else ""))  # fmt: skip
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(f"fit() needs a genlab.data.Dataset, not {type(data).__name__} {data!r}"[:120] + "; use genlab.data.load(...)")
    saved: dict[str, Any] = {}
    if resume and out is not None and RunPaths(Path(out)).config.is_file():
        saved = read_run_config(out)["train"]  # a resumed run keeps its options unless told otherwise
        _check_resume_options(saved, options)
    if isinstance(options.get("init"), os.PathLike):
        options["init"] = str(options["init"])
    cfg = TrainConfig.from_dict({**model.training_defaults(), **saved, **options})
    engine = _Engine(model, data, cfg, None if out is None else Path(out), resume)
    return engine.run()


def _check_resume_options(saved: dict[str, Any], options: dict[str, Any]) -> None:
    """Refuse, with the reason, the options a resumed run cannot honour (FIXED_ON_RESUME)."""
    given = TrainConfig.from_dict({**saved, **options}).to_dict()
    for name, why in FIXED_ON_RESUME.items():
        if name not in options or name not in saved:
            continue
        before, after = saved[name], given[name]
        changed = (before > 0) != (after > 0) if name == "ema_decay" else before != after
        if changed:
            raise ConfigError(
                f"cannot resume with {name}={after} (the run has {before}): {why}. Leave it out to resume, or start a new run"
            )
