"""Training speed and peak memory of every family's default model on MNIST on the CPU, beside references.

For each model of `--models` (default: vae, vq-vae, dcgan, wgan-gp, realnvp, glow, pixelcnn, ddpm, edm)
it builds the DEFAULT model, `genlab.create(name, data=mnist)`, with its own training defaults
(`model.training_defaults()` over `TrainConfig`, what `fit` uses), and drives the engine's real step: `_Engine(model, train,
cfg, None, False)` and, per step, what one iteration of `_Engine.run` does before logging:
`engine.train_step(engine.sampler.next())` and the EMA update where the defaults keep one. Nothing
about the architectures is written here: whatever defaults genlab has are the ones measured, and the
JSON records each model's config and training options.

- `--warmup` untimed steps, then timed steps for `--seconds` per row (at least 3);
- images/s = batch / the median step time, ms/step, parameters, the default max_steps and the
  training time it implies (max_steps x step time);
- peak memory: the growth of the process's resident set over the timed steps, above what it was
  before the model was built (`_common.MemoryMeter`): weights, gradients, optimizer and EMA state,
  activations. The training split is loaded once before every row and shared by all of them;
- data share: `engine.batch(indices)` alone for each timed step's indices, timed after the step,
  as a percentage of the step time (the goal: under 10%).

A GAN whose critic takes n_critic > 1 steps per generator step (wgan-gp) counts one critic iteration
as a step, as the engine does; its step time is the median over whole cycles of n_critic steps of
their mean, so that the generator's step is counted once per cycle.

References, in the same process, with the same threads, data order (the engine's EpochSampler) and
batch size as the genlab row they sit beside, each in a plain loop (gather the batch from the uint8
tensor, forward, loss, backward, optimizer step, zero the gradients), without EMA:
- beside `vae`: pythae's VAE with its MNIST benchmark networks (Encoder_Conv_VAE_MNIST,
  Decoder_Conv_AE_MNIST), genlab's latent size, its BCE loss, Adam; and the classic PyTorch example's
  MLP VAE (784-400-20, Bernoulli decoder, Adam 1e-3), written here as the floor;
- beside `ddpm`: diffusers' UNet2DModel laid out like ddpm's default UNet (`_common.diffusers_unet_like`
  on the UNet's constructor fields as genlab resolved them; both parameter counts are printed), its
  DDPMScheduler's eps-prediction loss, AdamW at ddpm's learning rate.
`pythae` and `diffusers` are benchmark-only: install them in a separate virtualenv (benchmarks/README.md,
`.bench-venv`), never into genlab's dependencies. Where one does not import, the script says so in
one line and measures the rest.

The pixelcnn row (autoregressive) also reports sampling images/s for a batch of `--sample-batch` (64).
`--faces` writes 100 of the Olivetti faces, downscaled to 25x25 grayscale PNGs, into a temporary
folder and times `genlab.data.load(folder)` and `genlab.fit` of the default `vae` for 200 steps into a
run folder there, as `genlab train vae --data FOLDER --max-steps 200` would (goal: at most 30 s).

    .bench-venv/bin/python benchmarks/mnist_cpu.py --faces --json results/mnist-cpu.json   # ~5 min
    python benchmarks/mnist_cpu.py --models vae,ddpm --seconds 10
    python benchmarks/mnist_cpu.py --quick                 # smoke run: 1 + 2 steps per row; numbers mean nothing
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import inspect
import math
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MemoryMeter,
    check_parameter_match,
    count_parameters,
    diffusers_status,
    diffusers_unet_like,
    environment,
    format_table,
    median,
    ratio,
    timed,
    write_json,
)

import genlab  # noqa: E402
from genlab.data.dataset import Dataset  # noqa: E402
from genlab.registry import get as registry_entry  # noqa: E402
from genlab.train.config import TrainConfig  # noqa: E402
from genlab.train.engine import EpochSampler, _Engine  # noqa: E402

CPU = torch.device("cpu")
MODELS = ("vae", "vq-vae", "dcgan", "wgan-gp", "realnvp", "glow", "pixelcnn", "ddpm", "edm")
# the goals
MIN_IMAGES_PER_S = 1000.0
MIN_DIFFUSION_IMAGES_PER_S = 200.0
MAX_DATA_SHARE_PCT = 10.0
MIN_VAE_OVER_PYTHAE = 3.0
MIN_DDPM_OVER_DIFFUSERS = 1.0
MAX_FACES_SECONDS = 30.0
FACES, FACE_SIDE = 100, 25


# -- the rows' training loops --------------------------------------------------------------------------
class GenlabTrainer:
    """genlab's default `name` for the data, trained by the engine's own step."""

    def __init__(self, name: str, data: Dataset, train: Dataset, batch_size: int | None, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = genlab.create(name, data=data)
        options = {**self.model.training_defaults(), "device": "cpu", "progress": False, "tensorboard": False, "seed": seed}
        if batch_size:
            options["batch_size"] = batch_size
        self.defaults = dict(self.model.training_defaults())
        self.cfg = TrainConfig.from_dict(options)
        # `train` has no other split, so the engine trains on it as it is (no copy of the images per row)
        self.engine = _Engine(self.model, train, self.cfg, None, False)
        self.model.train()
        self.batch_size = self.engine.batch_size
        self.parameters = count_parameters(self.model)
        # a critic iteration is an engine step; the generator steps once every n_critic of them
        self.cycle = max(1, int(getattr(self.model.config, "n_critic", 1) or 1))

    def step(self) -> tuple[Tensor, float]:
        """One iteration of the engine's loop (data order, step, EMA); returns (indices, seconds)."""
        engine = self.engine
        start = time.perf_counter()
        indices = engine.sampler.next()
        engine.in_step = True
        engine.train_step(indices)
        engine.step, engine.in_step = engine.step + 1, False
        if engine.ema is not None:
            engine.ema.update_parameters(self.model)
        return indices, time.perf_counter() - start

    def gather(self, indices: Tensor) -> None:
        self.engine.batch(indices)


class PlainTrainer:
    """A reference's plain loop: x = images[indices] / 255 (uint8 -> float in [0, 1]), then
    `loss_fn(x)`, backward, optimizer step, zero the gradients; the engine's data order."""

    cycle = 1

    def __init__(self, network: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Tensor], Tensor],
                 images: Tensor, batch_size: int, seed: int) -> None:  # fmt: skip
        self.network, self.optimizer, self.loss_fn, self.images = network, optimizer, loss_fn, images
        self.batch_size = min(batch_size, len(images))
        self.sampler = EpochSampler(len(images), self.batch_size, seed)
        self.parameters = count_parameters(network)
        network.train()

    def batch(self, indices: Tensor) -> Tensor:
        return self.images[indices].float().div_(255.0)

    def step(self) -> tuple[Tensor, float]:
        start = time.perf_counter()
        indices = self.sampler.next()
        loss = self.loss_fn(self.batch(indices))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return indices, time.perf_counter() - start

    def gather(self, indices: Tensor) -> None:
        self.batch(indices)


@contextlib.contextmanager
def recording_unet_fields() -> Iterator[list[tuple[nn.Module, dict[str, Any]]]]:
    """Record (instance, every constructor field with defaults filled in) of each genlab UNet built
    inside the block, so the diffusers reference copies the configuration genlab resolved (preset,
    data-dependent sizes, overrides) rather than one written here."""
    from genlab.nn.unet import UNet

    built: list[tuple[nn.Module, dict[str, Any]]] = []
    original = UNet.__init__
    signature = inspect.signature(original)

    def init(self, *args: Any, **fields: Any) -> None:
        bound = signature.bind(self, *args, **fields)
        bound.apply_defaults()
        built.append((self, {k: v for k, v in bound.arguments.items() if k != "self"}))
        original(self, *args, **fields)

    UNet.__init__ = init  # type: ignore[method-assign]
    try:
        yield built
    finally:
        UNet.__init__ = original  # type: ignore[method-assign]


class MLPVAE(nn.Module):
    """The classic PyTorch example VAE: 784-400-(20, 20) encoder, 20-400-784 decoder with a sigmoid
    (Bernoulli means); loss = BCE summed over pixels + KL(q(z|x) || N(0, I)), per image."""

    def __init__(self, dim: int = 784, hidden: int = 400, latent: int = 20) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(dim, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, dim)

    def loss(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, 1, 28, 28) -> (B, 784)
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = torch.sigmoid(self.fc4(F.relu(self.fc3(z))))
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kld) / x.shape[0]


def pythae_status() -> tuple[bool, str]:
    """(importable, version or the reason it is not)."""
    try:
        from pythae.models import VAE, VAEConfig  # noqa: F401
        from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST  # noqa: F401
    except Exception as error:  # ImportError, or a broken install raising something else
        return False, f"{type(error).__name__}: {error}"
    return True, importlib.metadata.version("pythae")


# -- the rows ----------------------------------------------------------------------------------------------
class Row:
    """One row of the table: a label, the genlab row it sits beside, how to build its trainer (given
    an optional batch size that overrides the row's own) and what to add to its record."""

    def __init__(self, label: str, beside: str, build: Callable[[int | None], Any], *, genlab_name: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.label, self.beside, self.build, self.genlab_name = label, beside, build, genlab_name
        self.extra = extra or {}


def plan_rows(args: argparse.Namespace, data: Dataset, train: Dataset, images: Tensor, notes: list[str]) -> list[Row]:
    """The genlab rows of --models, each followed by its references where they import. What a
    reference copies from its genlab row (batch size, latent size, UNet fields, learning rate) is read
    here from a default model built once, outside every row's memory measure."""
    rows: list[Row] = []
    for name in args.models:
        rows.append(Row(name, name, lambda b, name=name: GenlabTrainer(name, data, train, b, args.seed), genlab_name=name))
        try:
            rows += reference_rows(name, args, data, images, notes, pythae_status(), diffusers_status())
        except Exception as error:  # e.g. a default that does not build: its genlab row reports it in full
            notes.append(f"the references beside {name} are skipped: {type(error).__name__}: {error}")
    return rows


def reference_rows(name: str, args: argparse.Namespace, data: Dataset, images: Tensor, notes: list[str],
                   pythae: tuple[bool, str], diffusers: tuple[bool, str]) -> list[Row]:  # fmt: skip
    """The references beside genlab's `name` (none for most models); a note for each one skipped."""
    if name == "vae":
        return vae_references(args, data, images, notes, pythae)
    if name == "ddpm":
        return ddpm_references(args, data, images, notes, diffusers)
    return []


def vae_references(args: argparse.Namespace, data: Dataset, images: Tensor, notes: list[str], pythae: tuple[bool, str]) -> list[Row]:
    """pythae's VAE (where it imports and the images are 1x28x28) and the MLP floor, at vae's batch."""
    model = genlab.create("vae", data=data)
    batch = TrainConfig.from_dict(model.training_defaults()).batch_size
    latent_dim = int(getattr(model.config, "latent_dim", 16))
    del model
    rows: list[Row] = []
    shape = tuple(data.spec.shape)
    if not pythae[0]:
        notes.append(f"pythae is not importable ({pythae[1]}); its VAE row is skipped")
    elif shape != (1, 28, 28):
        notes.append(f"pythae's MNIST networks take 1x28x28 images, the data is {shape}; its VAE row is skipped")
    else:
        rows.append(Row("pythae VAE (conv)", "vae", lambda b: pythae_trainer(images, latent_dim, b or batch, args.seed),
                        extra={"latent_dim": latent_dim}))  # fmt: skip
    rows.append(Row("MLP VAE (floor)", "vae", lambda b: mlp_trainer(images, b or batch, args.seed)))
    return rows


def ddpm_references(args: argparse.Namespace, data: Dataset, images: Tensor, notes: list[str], diffusers: tuple[bool, str]) -> list[Row]:
    """diffusers' UNet2DModel laid out like the one genlab UNet of ddpm's default network, at ddpm's batch."""
    if not diffusers[0]:
        notes.append(f"diffusers is not importable ({diffusers[1]}); its UNet row is skipped")
        return []
    with recording_unet_fields() as unets:
        model = genlab.create("ddpm", data=data)
    cfg = TrainConfig.from_dict(model.training_defaults())
    inside = [(module, fields) for module, fields in unets if any(module is m for m in model.modules())]
    if len(inside) != 1:
        notes.append(f"ddpm's default network ({type(getattr(model, 'net', model)).__name__}) holds {len(inside)} genlab UNets, "
                     "not one; the diffusers UNet row is skipped")  # fmt: skip
        return []
    unet, fields = inside[0]
    genlab_params = count_parameters(unet)
    diffusers_params = count_parameters(diffusers_unet_like(fields, fields["in_channels"]))
    del model, unet
    notes.append("ddpm's UNet vs diffusers' UNet2DModel: " + check_parameter_match(genlab_params, diffusers_params))
    return [Row("diffusers UNet2DModel", "ddpm", lambda b: diffusers_trainer(images, fields, cfg.lr, b or cfg.batch_size, args.seed),
                extra={"unet_fields": _plain(fields), "genlab_unet_parameters": genlab_params})]  # fmt: skip


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def pythae_trainer(images: Tensor, latent_dim: int, batch_size: int, seed: int) -> PlainTrainer:
    from pythae.models import VAE, VAEConfig
    from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST

    torch.manual_seed(seed)
    config = VAEConfig(input_dim=tuple(images.shape[1:]), latent_dim=latent_dim, reconstruction_loss="bce")
    vae = VAE(config, encoder=Encoder_Conv_VAE_MNIST(config), decoder=Decoder_Conv_AE_MNIST(config))
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-4)  # pythae's BaseTrainerConfig default
    return PlainTrainer(vae, optimizer, lambda x: vae({"data": x}).loss, images, batch_size, seed)


def mlp_trainer(images: Tensor, batch_size: int, seed: int) -> PlainTrainer:
    torch.manual_seed(seed)
    vae = MLPVAE(dim=math.prod(images.shape[1:]))
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    return PlainTrainer(vae, optimizer, vae.loss, images, batch_size, seed)


def diffusers_trainer(images: Tensor, fields: dict[str, Any], lr: float, batch_size: int, seed: int) -> PlainTrainer:
    """diffusers' UNet2DModel laid out like genlab's UNet of `fields`, its DDPMScheduler (linear betas,
    1000 steps) and the eps-prediction MSE, AdamW at ddpm's learning rate."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet = diffusers_unet_like(fields, fields["in_channels"])
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)

    def loss(x: Tensor) -> Tensor:
        x0 = 2.0 * x - 1.0  # [0, 1] -> [-1, 1]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],))
        noise = torch.randn_like(x0)
        return F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)

    return PlainTrainer(unet, optimizer, loss, images, batch_size, seed)


# -- one measurement ---------------------------------------------------------------------------------------
def step_time(step_s: list[float], cycle: int) -> float:
    """The median step time; with cycle > 1 the median over whole cycles of their mean step time
    (the mean of all steps where no cycle is complete)."""
    groups = [step_s[i : i + cycle] for i in range(0, len(step_s) - cycle + 1, cycle)]
    if cycle == 1:
        return median(step_s)
    return median([statistics.fmean(g) for g in groups]) if groups else statistics.fmean(step_s)


def measure(row: Row, args: argparse.Namespace, *, batch_size: int | None, warmup: int, min_steps: int,
            seconds: float, exact_steps: bool) -> dict[str, Any]:  # fmt: skip
    """Build the row's trainer after a memory baseline, run `warmup` untimed steps, then timed steps
    (each followed by the data gathering alone for its indices) until `seconds` have passed and at
    least `min_steps` steps (whole cycles) are done; exactly `min_steps` with `exact_steps`."""
    meter = MemoryMeter(CPU)
    meter.set_baseline()
    trainer = row.build(batch_size)
    for _ in range(warmup):
        trainer.step()
    step_s: list[float] = []
    data_s: list[float] = []
    with meter.phase():
        start = time.perf_counter()
        while True:
            indices, seconds_taken = trainer.step()
            step_s.append(seconds_taken)
            data_s.append(timed(lambda: trainer.gather(indices), CPU))
            if exact_steps:
                if len(step_s) >= min_steps:
                    break
            elif len(step_s) >= min_steps and time.perf_counter() - start >= seconds and len(step_s) % trainer.cycle == 0:
                break
    step = step_time(step_s, trainer.cycle)
    result: dict[str, Any] = {
        "row": row.label,
        "beside": row.beside,
        "genlab": row.genlab_name is not None,
        "batch_size": trainer.batch_size,
        "parameters": trainer.parameters,
        "cycle": trainer.cycle,
        "step_s": step,
        "ms_per_step": 1000.0 * step,
        "images_per_s": trainer.batch_size / step,
        "data_s": median(data_s),
        "data_share_pct": 100.0 * median(data_s) / step,
        "peak_mib": meter.peak_mib,
        "steps_timed": len(step_s),
        "step_times_s": step_s,
        "data_times_s": data_s,
    }
    if isinstance(trainer, GenlabTrainer):
        entry = registry_entry(row.genlab_name)
        result.update(
            family=entry.family,
            model_class=type(trainer.model).__name__,
            model_config=trainer.model.config.to_dict(),
            train_defaults=trainer.defaults,
            train_config=trainer.cfg.to_dict(),
            max_steps=trainer.cfg.max_steps,
            implied_train_s=trainer.cfg.max_steps * step,
            ema=trainer.engine.ema is not None,
        )
        if entry.family == "autoregressive" and args.sample_batch > 0:
            result.update(measure_sampling(trainer, args))
    result.update(row.extra)
    del trainer
    meter.release()
    return result


def measure_sampling(trainer: GenlabTrainer, args: argparse.Namespace) -> dict[str, Any]:
    """One timed `model.sample(sample_batch)` (autoregressive: one network pass per pixel), in eval mode."""
    model = trainer.model
    model.eval()
    generator = torch.Generator().manual_seed(args.seed)
    seconds = timed(lambda: model.sample(args.sample_batch, generator=generator), CPU)
    model.train()
    return {"sample_batch": args.sample_batch, "sample_s": seconds, "sample_images_per_s": args.sample_batch / seconds}


def warm_up_process(rows: list[Row], args: argparse.Namespace) -> None:
    """Run every row once, untimed, with batches of 2: the resident-set measure would otherwise charge
    the first row of each kind with the process's one-off costs (lazy imports, oneDNN's kernels)."""
    print("warming up the process (every row, batches of 2, untimed) ...", flush=True)
    for row in rows:
        try:
            trainer = row.build(2)
            trainer.step()
            del trainer
        except Exception:  # reported when the row itself is measured
            pass
    gc.collect()


# -- the 100-face folder -----------------------------------------------------------------------------------
def measure_faces(args: argparse.Namespace) -> dict[str, Any]:
    """Write FACES Olivetti faces (every fourth of the 400: all 40 people) as FACE_SIDE x FACE_SIDE
    grayscale PNGs (Pillow, Lanczos) into a temporary folder; time `genlab.data.load(folder)` +
    `genlab.create("vae")` and `genlab.fit(..., max_steps=args.faces_steps)` into a run folder there."""
    import numpy as np
    from PIL import Image

    source = Path(args.root) / "olivetti-faces" / "faces.npz"
    if not source.is_file():
        return {"error": f"no {source}; --faces needs the Olivetti faces (give --root)"}
    faces = np.load(source)["x"][:: 400 // FACES][:FACES]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "faces"
        folder.mkdir()
        for i, face in enumerate(faces):
            Image.fromarray(face, mode="L").resize((FACE_SIDE, FACE_SIDE), Image.LANCZOS).save(folder / f"face_{i:03d}.png")
        start = time.perf_counter()
        data = genlab.data.load(str(folder), cache=False)
        model = genlab.create("vae", data=data)
        loaded = time.perf_counter()
        run = genlab.fit(model, data, max_steps=args.faces_steps, out=Path(tmp) / "run", progress=False, device="cpu", seed=args.seed)
        done = time.perf_counter()
    # the training loop's own time, from the engine's log (batch x steps / examples_per_s per interval);
    # the rest of fit is set-up, the final validation, checkpoint, sample grid and figures
    batch = min(run.config.batch_size, len(data.split("train")))  # the engine's: no larger than the split
    loop_s, previous = 0.0, 0
    for row in run.history:
        if row.get("split") == "train" and row.get("examples_per_s"):
            loop_s += batch * (row["step"] - previous) / row["examples_per_s"]
            previous = row["step"]
    return {
        "images": len(faces),
        "shape": list(data.spec.shape),
        "train_images": len(data.split("train")),
        "batch_size": batch,
        "steps": run.step,
        "load_s": loaded - start,
        "fit_s": done - loaded,
        "fit_loop_s": loop_s,
        "total_s": done - start,
    }


# -- output ------------------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def find(results: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    return next((r for r in results if r.get("row") == label and "error" not in r), None)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pairs = [("vae", "pythae VAE (conv)"), ("vae", "MLP VAE (floor)"), ("ddpm", "diffusers UNet2DModel")]
    out = []
    for ours, theirs in pairs:
        a, b = find(results, ours), find(results, theirs)
        if a is None and b is None:
            continue
        out.append({
            "genlab": ours,
            "reference": theirs,
            "images_per_s": ratio(a and a["images_per_s"], b and b["images_per_s"]),
            "peak_mib": ratio(a and a["peak_mib"], b and b["peak_mib"]),
            "parameters": ratio(a and a["parameters"], b and b["parameters"]),
        })  # fmt: skip
    return out


def goals(results: list[dict[str, Any]], ratio_rows: list[dict[str, Any]], faces: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The issue's goals, each passed (True), failed (False) or not measured (None)."""
    out: list[dict[str, Any]] = []

    def goal(text: str, passed: bool | None, value: str) -> None:
        out.append({"goal": text, "passed": passed, "value": value})

    by_pair = {(r["genlab"], r["reference"]): r for r in ratio_rows}
    vae_pythae = by_pair.get(("vae", "pythae VAE (conv)"), {}).get("images_per_s", math.nan)
    if ("vae", "pythae VAE (conv)") in by_pair or find(results, "vae"):
        goal(f"vae >= {MIN_VAE_OVER_PYTHAE:g}x pythae's VAE images/s", None if math.isnan(vae_pythae) else vae_pythae >= MIN_VAE_OVER_PYTHAE,
             f"{vae_pythae:.2f}x" if not math.isnan(vae_pythae) else "not measured")  # fmt: skip
    ddpm_diffusers = by_pair.get(("ddpm", "diffusers UNet2DModel"), {}).get("images_per_s", math.nan)
    if ("ddpm", "diffusers UNet2DModel") in by_pair or find(results, "ddpm"):
        goal("ddpm >= diffusers' UNet of the same size, images/s", None if math.isnan(ddpm_diffusers) else ddpm_diffusers >= MIN_DDPM_OVER_DIFFUSERS,
             f"{ddpm_diffusers:.2f}x" if not math.isnan(ddpm_diffusers) else "not measured")  # fmt: skip
    for r in results:
        if not r.get("genlab"):
            continue
        if "error" in r:
            goal(f"{r['row']}: trains", False, r["error"][:80])
            continue
        floor = MIN_DIFFUSION_IMAGES_PER_S if r["family"] == "diffusion" else MIN_IMAGES_PER_S
        goal(f"{r['row']}: training >= {floor:,.0f} images/s", r["images_per_s"] >= floor, f"{r['images_per_s']:,.0f}")
        goal(f"{r['row']}: data share < {MAX_DATA_SHARE_PCT:g}% of a step", r["data_share_pct"] < MAX_DATA_SHARE_PCT, f"{r['data_share_pct']:.1f}%")
    if faces is not None:
        if "error" in faces:
            goal(f"100 faces: {FACES} steps of vae <= {MAX_FACES_SECONDS:g} s", None, faces["error"])
        else:
            goal(f"100 faces: load + {faces['steps']} steps of vae (genlab.fit) <= {MAX_FACES_SECONDS:g} s",
                 faces["total_s"] <= MAX_FACES_SECONDS, f"{faces['total_s']:.1f} s")  # fmt: skip
    return out


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# -- the run -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated genlab models (default: {','.join(MODELS)})")
    parser.add_argument("--data", default="mnist", help="dataset name or path for genlab.data.load (default: mnist)")
    parser.add_argument("--root", default="../shared/datasets", help="where standard datasets (mnist) and olivetti-faces/ lie")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per row (at least 3 steps)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row before timing")
    parser.add_argument("--batch-size", type=int, default=None, help="override every row's batch (default: each model's own)")
    parser.add_argument("--sample-batch", type=int, default=64, help="images per autoregressive sampling run (0: skip)")
    parser.add_argument("--faces", action="store_true", help="also time 200 steps of vae on a folder of 100 25x25 faces")
    parser.add_argument("--faces-steps", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write settings, environment and every raw number here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up + 2 timed steps per row; numbers mean nothing")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        parser.error("--models is empty")
    for name in args.models:
        registry_entry(name)  # an unknown name fails here, with genlab's list of models
    if args.quick:
        args.warmup, args.seconds = 1, 0.0
        args.sample_batch = min(args.sample_batch, 2)
        args.faces_steps = 5
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(previous_threads)


def run(args: argparse.Namespace) -> dict[str, Any]:
    warnings.filterwarnings("ignore", message=r".*functools\.lru_cache.*")  # diffusers' version check
    data = genlab.data.load(args.data, root=args.root)
    if data.spec.kind != "image":
        raise SystemExit(f"--data {args.data!r} holds {data.spec.kind} data; this benchmark trains image models")
    train = data.split("train")
    images = train.storage  # uint8 (N, C, H, W), shared by the references' plain loops
    if images.dtype != torch.uint8:
        raise SystemExit(f"--data {args.data!r} is stored as {images.dtype}; the references read uint8 images")

    env = environment()
    env.update(cpu_threads=torch.get_num_threads(), cpu_model=cpu_model())
    pythae_ok, pythae_version = pythae_status()
    env["pythae"] = pythae_version if pythae_ok else None
    print(f"{data.spec.name}: {len(train):,} training images {tuple(data.spec.shape)}; torch {env['torch']}, "
          f"{env['cpu_threads']} threads, {env['cpu_model']}")  # fmt: skip
    installed = [f"{k} {env[k]}" for k in ("pythae", "diffusers") if env[k]]
    if installed:
        print("references from " + ", ".join(installed))

    notes: list[str] = []
    rows = plan_rows(args, data, train, images, notes)
    for note in dict.fromkeys(notes):
        print(note)
    if not args.quick:
        warm_up_process(rows, args)

    results: list[dict[str, Any]] = []
    for row in rows:
        print(f"measuring {row.label} ...", flush=True)
        try:
            result = measure(row, args, batch_size=args.batch_size, warmup=args.warmup, min_steps=2 if args.quick else 3,
                             seconds=args.seconds, exact_steps=args.quick)  # fmt: skip
        except Exception as error:  # one failing row (e.g. a default the lead just changed) must not end the run
            traceback.print_exc()
            result = {"row": row.label, "beside": row.beside, "genlab": row.genlab_name is not None, "error": f"{type(error).__name__}: {error}"}
            print(f"  {row.label} failed: {result['error']}")
        results.append(result)
    for note in notes:
        if note.startswith("ddpm's UNet"):
            print(note)  # again, beside the results

    faces = None
    if args.faces:
        print(f"timing {args.faces_steps} steps of vae on {FACES} faces of {FACE_SIDE}x{FACE_SIDE} ...", flush=True)
        try:
            faces = measure_faces(args)
        except Exception as error:
            traceback.print_exc()
            faces = {"error": f"{type(error).__name__}: {error}"}

    ratio_rows = ratios(results)
    goal_rows = goals(results, ratio_rows, faces)
    print_report(results, ratio_rows, goal_rows, faces, args)
    payload = {
        "settings": {k: v for k, v in vars(args).items()},
        "environment": env,
        "notes": list(dict.fromkeys(notes)),
        "rows": results,
        "ratios": ratio_rows,
        "goals": goal_rows,
        "faces": faces,
    }
    write_json(args.json, payload)
    return payload


def print_report(results: list[dict[str, Any]], ratio_rows: list[dict[str, Any]], goal_rows: list[dict[str, Any]],
                 faces: dict[str, Any] | None, args: argparse.Namespace) -> None:  # fmt: skip
    print()
    if args.quick:
        print("--quick: a smoke run; the numbers below mean nothing")
    print(format_table(
        ["row", "beside", "batch", "params", "img/s", "ms/step", "data %", "peak MiB", "max_steps", "train time"],
        [[r["row"] if r.get("genlab") else f"  {r['row']}", r["beside"], r.get("batch_size"), _count(r.get("parameters")),
          r.get("images_per_s"), r.get("ms_per_step"), r.get("data_share_pct"), r.get("peak_mib"), r.get("max_steps"),
          duration(r.get("implied_train_s")) if r.get("genlab") else "-"]
         for r in results],
    ))  # fmt: skip
    for r in results:
        if "error" in r:
            print(f"{r['row']}: failed ({r['error']})")
        if "sample_images_per_s" in r:
            print(f"{r['row']} sampling: {r['sample_images_per_s']:.3g} images/s ({r['sample_batch']} images in {r['sample_s']:.1f} s, "
                  f"one network pass per pixel)")  # fmt: skip
    if ratio_rows:
        print()
        print(format_table(
            ["genlab / reference", "img/s", "peak MiB", "params"],
            [[f"{r['genlab']} / {r['reference']}", r["images_per_s"], r["peak_mib"], r["parameters"]] for r in ratio_rows],
        ))  # fmt: skip
    if faces is not None and "error" not in faces:
        print(f"\n100 faces ({faces['images']} PNGs {'x'.join(map(str, faces['shape']))}, {faces['train_images']} for training, batch "
              f"{faces['batch_size']}): load + create {faces['load_s']:.1f} s, fit {faces['fit_s']:.1f} s (of which the loop of "
              f"{faces['steps']} steps {faces['fit_loop_s']:.1f} s), total {faces['total_s']:.1f} s")  # fmt: skip
    print()
    for g in goal_rows:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[g["passed"]]
        print(f"{verdict}  {g['goal']}: {g['value']}")


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


if __name__ == "__main__":
    main()
