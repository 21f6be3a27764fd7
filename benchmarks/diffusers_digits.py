"""genlab's DDPM against diffusers on 8x8 digits: the same budget of CPU time, FID at each sampler.

What it does, in one process:

1. Trains genlab's `ddpm` on `digits` (`genlab.create("ddpm", data=digits)`: linear schedule, 1000
   steps, eps prediction, UNet preset "small", ~0.63M parameters) with `genlab.fit` and its EMA
   weights, and a diffusers UNet2DModel laid out the same way (`_common.diffusers_unet_like`, the
   same parameter count) with diffusers' DDPMScheduler (linear betas 1e-4..0.02, 1000 steps, eps
   prediction) in a plain loop. Both get the same budget (`--minutes` on `--threads` CPU threads),
   batch size, AdamW learning rate, warm-up + cosine schedule (the engine's own function), EMA decay
   (torch.optim.swa_utils, as the engine), data order (the engine's EpochSampler) and data, the train
   split scaled to [-1, 1].
   The budget is turned into a number of steps (the cosine schedule needs max_steps up front): a short
   untimed probe of each loop measures its steps per second, and max_steps = 0.95 x budget x rate. On
   a CPU the budget counts CPU time of this process (`--clock cpu`: minutes x threads CPU-seconds,
   the rate the slope of CPU time between two probe lengths), so that other processes sharing the
   cores slow both trainings down without changing how many steps either gets; `--clock wall` counts
   wall-clock seconds (the median steps/s over 10-step intervals). Both times are printed.
   On a machine that other processes share, count CPU time on ONE thread (`--threads 1 --minutes
   20` is the CPU time of 10 minutes on 2 cores): with 2 threads, a thread that waits for its
   descheduled partner spins, and the spinning is counted. Measured: diffusers' probe fell from
   4.0 to 2.0 steps per CPU-second when a test run shared the cores, genlab's did not move as
   much, so the budget gave diffusers 2,272 steps against genlab's 3,980.
2. Samples `--samples` images from each EMA model with: ancestral sampling on all 1000 steps (genlab
   `sampler="ancestral"`; diffusers DDPMScheduler), DDIM (eta = 0) at 10, 20 and 50 steps (genlab
   `sampler="ddim"`; diffusers DDIMScheduler with "trailing" spacing, the grid genlab uses),
   DPM-Solver++(2M) at 20 and 50 steps and its SDE variant at 50 (genlab `sampler="dpm_solver"` with
   eta 0 / 1; diffusers DPMSolverMultistepScheduler "dpmsolver++" / "sde-dpmsolver++", order 2,
   "trailing"), and genlab's Heun sampler of the probability-flow ODE at 25 steps (49 network
   evaluations). Samples are
   mapped to [0, 1], clamped and quantized to digits' 17 levels by the same function for both.
3. FID (the shipped `digits` feature extractor) of each set against the 180-image test split, via
   `genlab.metrics.evaluate_samples`, for each seed of `--seeds`; the table shows the mean and half
   the range over seeds.

The verdict lines answer the issue's questions: does a genlab sampler with <= 50 network evaluations
reach the 1000-step ancestral FID (its mean plus its seed range), and does diffusers have a lower mean
FID than genlab at any step count. The VAE's FID quoted from the README is printed for reference (it
is not measured here).

    python benchmarks/diffusers_digits.py --json results/digits.json      # 2 x 10 min training + sampling
    python benchmarks/diffusers_digits.py --quick                         # smoke run of every path
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    check_parameter_match,
    count_parameters,
    diffusers_status,
    diffusers_unet_like,
    environment,
    format_table,
    median,
    synchronize,
    write_json,
)

import genlab  # noqa: E402
from genlab.data.dataset import DataSpec  # noqa: E402
from genlab.data.transforms import quantize  # noqa: E402
from genlab.metrics import evaluate_samples  # noqa: E402
from genlab.nn.unet import UNET_PRESETS  # noqa: E402
from genlab.train.config import TrainConfig  # noqa: E402
from genlab.train.engine import EpochSampler, _lr_lambda  # noqa: E402

VAE_README_FID = 21.2  # README "Models" table: the VAE on digits, 1,000 samples, mean of seeds 0-2
PROBE_INTERVAL = 10  # steps per timed interval of the rate probes


# -- the shared training settings ------------------------------------------------------------------
def train_config(args: argparse.Namespace, max_steps: int) -> TrainConfig:
    """The options both trainings use; genlab.fit takes them as keywords, the diffusers loop reads them."""
    return TrainConfig(
        max_steps=max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule="cosine",
        warmup_steps=min(args.warmup_steps, max_steps // 10),
        ema_decay=args.ema_decay,
        device=args.device,
        seed=args.train_seed,
        log_every=PROBE_INTERVAL,
        progress=False,
        tensorboard=False,
    )


def budget_note(info: dict[str, Any], budget_s: float, clock: str) -> str:
    """How long a training took on the budget's clock, against the budget."""
    spent = info["cpu_seconds"] if clock == "cpu" else info["seconds"]
    over = spent - budget_s
    note = f"{spent:.0f} {clock}-s of a budget of {budget_s:.0f}; wall {info['seconds']:.0f} s"
    return note + (f"; OVER by {over:.0f} s: training ran slower than the probe" if over > 0 else "")


def steps_for_budget(steps_per_s: float, budget_s: float) -> int:
    """Steps that fit 95% of the budget at the probed rate (the rest absorbs the rate's noise)."""
    return max(1, int(0.95 * budget_s * steps_per_s))


# -- genlab ----------------------------------------------------------------------------------------
def cpu_rate(run_steps: Callable[[int], None], steps: int) -> float:
    """Training steps per CPU-second (all threads of this process, `time.process_time`) of a loop run
    by `run_steps(n)`: the slope between a run of `steps` and one of 3 x `steps`, so that what a run
    costs once (building the model, the engine's final samples) cancels. CPU time, unlike the wall
    clock, does not shrink when other processes share the cores."""
    costs = []
    for n in (steps, 3 * steps):
        start = time.process_time()
        run_steps(n)
        costs.append(time.process_time() - start)
    return 2 * steps / max(costs[1] - costs[0], 1e-9)


def genlab_rate(data, args: argparse.Namespace) -> float:
    """Training steps per second of genlab.fit on a throw-away model. Wall clock: the median over
    intervals of PROBE_INTERVAL steps (the engine logs examples/s per interval), the first left out;
    CPU clock: `cpu_rate`."""
    def run_steps(n: int):
        return genlab.fit(genlab.create("ddpm", data=data), data, **train_config(args, n).to_dict())

    if args.clock == "cpu":
        return cpu_rate(run_steps, args.probe_steps)
    run = run_steps(args.probe_steps)
    rates = [row["examples_per_s"] / args.batch_size for row in run.history if row.get("split") == "train"][1:]
    return median(rates)


def train_genlab(data, args: argparse.Namespace, max_steps: int) -> tuple[nn.Module, dict[str, Any]]:
    """genlab.fit for max_steps; returns the EMA model and what the training took."""
    model = genlab.create("ddpm", data=data)
    cfg = train_config(args, max_steps)
    start, cpu_start = time.perf_counter(), time.process_time()
    run = genlab.fit(model, data, **cfg.to_dict())
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    losses = [row["loss"] for row in run.history if row.get("split") == "train"]
    return run.sampling_model.eval(), {"steps": run.step, "warmup_steps": cfg.warmup_steps, "seconds": seconds,
                                       "cpu_seconds": cpu_seconds, "final_loss": losses[-1] if losses else None}


@torch.no_grad()
def genlab_images(model, sampler: str, steps: int, n: int, seed: int, batch: int, **options: Any) -> tuple[Tensor, int]:
    """n images (n, 1, 8, 8) in [0, 1] on digits' 17 levels, drawn batch by batch from one seeded
    CPU generator (options go to the sampler, e.g. eta); and the network evaluations per batch."""
    generator = torch.Generator().manual_seed(seed)
    parts, nfe = [], 0
    for start in range(0, n, batch):
        result = model.generate(min(batch, n - start), generator=generator, sampler=sampler, steps=steps, **options)
        parts.append(model.to_data_space(result.x).cpu())
        nfe = result.nfe
    return torch.cat(parts), nfe


# -- diffusers -------------------------------------------------------------------------------------
class DiffusersDDPM:
    """diffusers' UNet2DModel with its DDPMScheduler, trained by a plain loop with genlab's settings."""

    def __init__(self, spec: DataSpec, device: torch.device) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        self.spec, self.device = spec, device
        unet_kwargs = {**UNET_PRESETS["small"], "image_size": spec.shape[-1]}
        self.unet = diffusers_unet_like(unet_kwargs, spec.shape[0]).to(device)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
            prediction_type="epsilon", variance_type="fixed_small", clip_sample=True,
        )  # fmt: skip
        # "trailing": steps from t = 999 down, the grid genlab's DDIM and DPM-Solver use (Lin et al. 2024)
        self.ddim = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
        self.dpm = DPMSolverMultistepScheduler.from_config(
            self.scheduler.config, timestep_spacing="trailing", algorithm_type="dpmsolver++", solver_order=2)
        self.dpm_sde = DPMSolverMultistepScheduler.from_config(
            self.scheduler.config, timestep_spacing="trailing", algorithm_type="sde-dpmsolver++", solver_order=2)
        self.ema: AveragedModel | None = None

    def loss(self, x0: Tensor) -> Tensor:
        """||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2, t ~ U{0..999} (Ho et al. 2020, alg. 1)."""
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        return F.mse_loss(self.unet(x_t, t).sample, noise)

    def train(self, x_train: Tensor, cfg: TrainConfig) -> dict[str, Any]:
        """cfg.max_steps AdamW steps with warm-up + cosine learning rates and EMA, as genlab.fit does;
        x_train (N, C, H, W) in [0, 1]. Returns the steps, the seconds and the steps/s of each
        PROBE_INTERVAL-step interval (wall clock)."""
        torch.manual_seed(cfg.seed)
        x_train = (2.0 * x_train - 1.0).to(self.device)  # [0, 1] -> [-1, 1], genlab's normalisation
        self.unet.train()
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
        self.ema = AveragedModel(self.unet, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        order = EpochSampler(len(x_train), min(cfg.batch_size, len(x_train)), cfg.seed)
        rates, losses = [], []
        cpu_start = time.process_time()
        start = interval_start = time.perf_counter()
        for step in range(1, cfg.max_steps + 1):
            loss = self.loss(x_train[order.next().to(self.device)])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            self.ema.update_parameters(self.unet)
            if step % PROBE_INTERVAL == 0:
                losses.append(loss.item())
                synchronize(self.device)
                now = time.perf_counter()
                rates.append(PROBE_INTERVAL / (now - interval_start))
                interval_start = now
        synchronize(self.device)
        self.ema.module.eval()
        return {"steps": cfg.max_steps, "warmup_steps": cfg.warmup_steps, "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu_start, "rates": rates,
                "final_loss": losses[-1] if losses else loss.item()}

    @torch.no_grad()
    def images(self, scheduler_name: str, steps: int, n: int, seed: int, batch: int) -> tuple[Tensor, int]:
        """n images from the EMA network with DDPMScheduler ("ddpm", ancestral), DDIMScheduler
        ("ddim", eta = 0) or DPMSolverMultistepScheduler (2nd order, "dpm": DPM-Solver++, "dpm-sde":
        SDE-DPM-Solver++) at `steps` steps, mapped to [0, 1] and quantized like genlab's; and the
        network evaluations per batch."""
        scheduler = {"ddpm": self.scheduler, "ddim": self.ddim, "dpm": self.dpm, "dpm-sde": self.dpm_sde}[scheduler_name]
        net = self.ema.module if self.ema is not None else self.unet
        generator = torch.Generator().manual_seed(seed)
        parts = []
        for start in range(0, n, batch):
            size = min(batch, n - start)
            scheduler.set_timesteps(steps)  # per batch: the multistep schedulers keep a step index
            x = torch.randn((size, *self.spec.shape), generator=generator).to(self.device)
            for t in scheduler.timesteps:
                eps = net(x, torch.full((size,), int(t), device=self.device)).sample
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            x = ((x.float() + 1.0) / 2.0).clamp(*self.spec.value_range)
            parts.append(quantize(x, self.spec).cpu())
        return torch.cat(parts), len(scheduler.timesteps)


def save_model(path: Path, model: nn.Module, training: dict[str, Any]) -> None:
    """The trained (EMA) weights and what the training took, so that `--models` can sample again
    without training (atomic: a partial file is never left under the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"weights": model.state_dict(), "training": training}, tmp)
    tmp.replace(path)
    print(f"saved {path}", flush=True)


def diffusers_rate(spec: DataSpec, x_train: Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """Training steps per second of the diffusers loop on a throw-away network, measured as `genlab_rate`."""
    def run_steps(n: int):
        return DiffusersDDPM(spec, device).train(x_train, train_config(args, n))

    if args.clock == "cpu":
        return cpu_rate(run_steps, args.probe_steps)
    return median(run_steps(args.probe_steps)["rates"][1:])


# -- evaluation ------------------------------------------------------------------------------------
def sampler_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The table's rows: label, genlab sampler and its options, steps, and the diffusers scheduler
    that runs the same algorithm (None where diffusers has none)."""
    rows = [{"label": f"ancestral-{args.ancestral_steps}", "genlab": "ancestral", "options": {}, "steps": args.ancestral_steps, "diffusers": "ddpm"}]
    rows += [{"label": f"ddim-{s}", "genlab": "ddim", "options": {}, "steps": s, "diffusers": "ddim"} for s in args.ddim_steps]
    rows += [{"label": f"dpm++2m-{s}", "genlab": "dpm_solver", "options": {}, "steps": s, "diffusers": "dpm"} for s in args.dpm_steps]
    rows += [{"label": f"dpm++2m-sde-{s}", "genlab": "dpm_solver", "options": {"eta": 1.0}, "steps": s, "diffusers": "dpm-sde"}
             for s in args.dpm_sde_steps]
    rows += [{"label": f"heun-{s}", "genlab": "heun", "options": {}, "steps": s, "diffusers": None} for s in args.heun_steps]
    return rows


def fid(real: Tensor, fake: Tensor, seed: int) -> dict[str, float]:
    """evaluate_samples in the shipped digits extractor's features: FID, KID, precision, recall."""
    return evaluate_samples(real, fake, "digits", generator=torch.Generator().manual_seed(seed))


def summarize(values: list[float]) -> dict[str, float]:
    """mean, half the range and the range over seeds."""
    return {"mean": sum(values) / len(values), "half_range": (max(values) - min(values)) / 2, "range": max(values) - min(values)}


def evaluate(name: str, draw: Callable[[str, int, int, dict], tuple[Tensor, int]], rows, real: Tensor, args, grids: Path | None) -> dict[str, Any]:
    """FID of `draw(sampler, steps, seed, options)` for every row and seed; {label: {"nfe", "per_seed", "fid"}}."""
    out: dict[str, Any] = {}
    for row in rows:
        sampler = row["genlab"] if name == "genlab" else row["diffusers"]
        if sampler is None:
            continue
        per_seed, nfe, start = [], 0, time.perf_counter()
        for seed in args.seeds:
            images, nfe = draw(sampler, row["steps"], seed, row["options"])
            if not torch.isfinite(images).all():
                raise RuntimeError(f"{name} {row['label']}: the samples are not finite")
            per_seed.append({"seed": seed, **fid(real, images, seed)})
            if grids is not None and seed == args.seeds[0]:
                from genlab.viz.grid import save_image_grid

                save_image_grid(images[:64], grids / f"{name}-{row['label']}.png")
        out[row["label"]] = {"nfe": nfe, "per_seed": per_seed, "fid": summarize([s["fid"] for s in per_seed]),
                             "seconds": time.perf_counter() - start}
        result = out[row["label"]]
        seeds = ", ".join(f"{s['fid']:.2f}" for s in per_seed)
        print(f"  {name} {row['label']}: NFE {nfe}, FID {result['fid']['mean']:.2f} ({seeds}), {result['seconds']:.0f} s", flush=True)
    return out


def verdicts(rows, ours: dict[str, Any], theirs: dict[str, Any] | None) -> list[str]:
    """The issue's questions, answered from the table."""
    lines = []
    ancestral = ours[rows[0]["label"]]["fid"]
    target = ancestral["mean"] + ancestral["range"]
    few = [(label, r) for label, r in ours.items() if r["nfe"] <= 50]
    reaching = [f"{label} (FID {r['fid']['mean']:.2f}, {r['nfe']} NFE)" for label, r in few if r["fid"]["mean"] <= target]
    head = (f"<= 50 NFE vs {rows[0]['label']} (FID {ancestral['mean']:.2f}, seed range {ancestral['range']:.2f}, "
            f"so <= {target:.2f} counts as reached): ")
    if reaching:
        lines.append(head + "REACHED by " + ", ".join(reaching))
    else:
        best_label, best = min(few, key=lambda item: item[1]["fid"]["mean"]) if few else ("none", None)
        lines.append(head + "NOT reached" + (f"; best {best_label} FID {best['fid']['mean']:.2f}" if best else ""))
    if theirs is None:
        lines.append("diffusers vs genlab: not measured (diffusers is not importable)")
    else:
        wins = []
        for label, r in theirs.items():
            g, d = ours[label]["fid"], r["fid"]
            if d["mean"] < g["mean"]:
                beyond = "beyond" if g["mean"] - d["mean"] > g["half_range"] + d["half_range"] else "within"
                wins.append(f"{label} (diffusers {d['mean']:.2f} vs genlab {g['mean']:.2f}; {beyond} the seeds' half ranges)")
        lines.append("diffusers beats genlab (lower mean FID) at: " + ("; ".join(wins) if wins else f"no step count ({len(theirs)} compared)"))
    best_label, best = min(ours.items(), key=lambda item: item[1]["fid"]["mean"])
    lines.append(f"genlab's best FID {best['fid']['mean']:.2f} ({best_label}) vs the VAE's {VAE_README_FID} (README, not measured here)")
    return lines


# -- the run ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each model, wall clock")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the issue's 2 cores)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="what the budget counts: CPU time of this process (minutes x threads CPU-seconds; the "
                             "default on a CPU, fair when other processes share the machine) or the wall clock "
                             "(the default on a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu (the issue's setting), cuda, ...")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: genlab ddpm's, 1e-3)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps, at most a tenth of the run (default: ddpm's, 100)")
    parser.add_argument("--ema-decay", type=float, default=None, help="EMA decay (default: ddpm's, 0.999)")
    parser.add_argument("--probe-steps", type=int, default=60, help="untimed steps that measure each loop's speed")
    parser.add_argument("--samples", type=int, default=1000, help="generated images per sampler and seed")
    parser.add_argument("--sample-batch", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds; FID is averaged over them")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--ancestral-steps", type=int, default=1000)
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--dpm-steps", type=int, nargs="+", default=[20, 50], help="DPM-Solver++(2M), ODE")
    parser.add_argument("--dpm-sde-steps", type=int, nargs="+", default=[50], help="DPM-Solver++(2M), SDE (eta = 1)")
    parser.add_argument("--heun-steps", type=int, nargs="+", default=[25])
    parser.add_argument("--no-diffusers", action="store_true", help="genlab alone")
    parser.add_argument("--grids", default=None, help="folder for PNG grids of 64 samples per model and sampler (first seed)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--models", default=None, help="folder for the trained models: saved after training; "
                        "if it already holds them, they are loaded and training is skipped (sampling again costs no training)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.3 minutes of training, 100 samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.samples, args.probe_steps = 0.3, 100, 30
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    torch.set_num_threads(args.threads)
    defaults = genlab.registry.get("ddpm").model_class.train_defaults
    args.lr = args.lr if args.lr is not None else defaults["lr"]
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else defaults["warmup_steps"]
    args.ema_decay = args.ema_decay if args.ema_decay is not None else defaults["ema_decay"]
    device = torch.device(args.device)
    started = time.perf_counter()

    data = genlab.data.load("digits")
    x_train, _ = data.split("train").tensors()
    real_test, _ = data.split("test").tensors()
    # the CPU clock counts every thread: `minutes` of `threads` busy cores
    budget_s = 60.0 * args.minutes * (args.threads if args.clock == "cpu" else 1)
    rows = sampler_rows(args)
    grids = Path(args.grids) if args.grids else None

    genlab_params = count_parameters(genlab.create("ddpm", data=data))
    available, diffusers_version = diffusers_status()
    use_diffusers = available and not args.no_diffusers
    diffusers_params = count_parameters(DiffusersDDPM(data.spec, device).unet) if use_diffusers else None
    print(f"digits: {len(x_train)} training images, {len(real_test)} test images; budget {args.minutes:g} min per model on "
          f"{args.threads} threads ({device}); batch {args.batch_size}, lr {args.lr:g} (warm-up + cosine), EMA {args.ema_decay}")
    if use_diffusers:
        print(f"diffusers {diffusers_version}; " + check_parameter_match(genlab_params, diffusers_params))
    else:
        reason = "--no-diffusers" if args.no_diffusers else f"not importable: {diffusers_version}"
        print(f"diffusers skipped ({reason}); genlab ddpm has {genlab_params:,} parameters")

    # 1. training, the same budget for both (or the trained models of an earlier run, --models)
    models_dir = Path(args.models) if args.models else None
    training: dict[str, Any] = {}
    saved = models_dir / "genlab.pt" if models_dir else None
    if saved is not None and saved.exists():
        genlab_model = genlab.create("ddpm", data=data)
        state = torch.load(saved, map_location="cpu")
        genlab_model.load_state_dict(state["weights"])
        genlab_model = genlab_model.to(device).eval()
        training["genlab"] = state["training"]
        print(f"genlab: the model trained by an earlier run ({saved}; {training['genlab']['steps']} steps)", flush=True)
    else:
        rate = genlab_rate(data, args)
        steps = steps_for_budget(rate, budget_s)
        print(f"genlab: {rate:.2f} steps per {args.clock}-s probed -> {steps} steps", flush=True)
        genlab_model, training["genlab"] = train_genlab(data, args, steps)
        training["genlab"]["probed_steps_per_s"] = rate
        print(f"genlab: trained {training['genlab']['steps']} steps ({budget_note(training['genlab'], budget_s, args.clock)}), "
              f"final loss {training['genlab']['final_loss']:.4f}", flush=True)
        if saved is not None:
            save_model(saved, genlab_model, training["genlab"])
    theirs_model = None
    if use_diffusers:
        theirs_model = DiffusersDDPM(data.spec, device)
        saved = models_dir / "diffusers.pt" if models_dir else None
        if saved is not None and saved.exists():
            state = torch.load(saved, map_location="cpu")
            theirs_model.ema = AveragedModel(theirs_model.unet, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))
            theirs_model.ema.module.load_state_dict(state["weights"])
            theirs_model.ema.module.eval()
            training["diffusers"] = state["training"]
            print(f"diffusers: the model trained by an earlier run ({saved}; {training['diffusers']['steps']} steps)", flush=True)
        else:
            rate = diffusers_rate(data.spec, x_train, args, device)
            steps = steps_for_budget(rate, budget_s)
            print(f"diffusers: {rate:.2f} steps per {args.clock}-s probed -> {steps} steps", flush=True)
            info = theirs_model.train(x_train, train_config(args, steps))
            training["diffusers"] = {k: v for k, v in info.items() if k != "rates"} | {"probed_steps_per_s": rate}
            print(f"diffusers: trained {info['steps']} steps ({budget_note(info, budget_s, args.clock)}), "
                  f"final loss {info['final_loss']:.4f}", flush=True)
            if saved is not None:
                save_model(saved, theirs_model.ema.module, training["diffusers"])

    # 2-3. samples and FID
    print(f"sampling {args.samples} images per sampler and seed (seeds {args.seeds}) ...", flush=True)
    ours = evaluate(
        "genlab", lambda sampler, steps, seed, options: genlab_images(genlab_model, sampler, steps, args.samples, seed, args.sample_batch, **options),
        rows, real_test, args, grids,
    )  # fmt: skip
    theirs = None
    if theirs_model is not None:
        theirs = evaluate(
            "diffusers", lambda sampler, steps, seed, options: theirs_model.images(sampler, steps, args.samples, seed, args.sample_batch),
            rows, real_test, args, grids,
        )  # fmt: skip

    def cell(result: dict[str, Any] | None) -> str:
        return "-" if result is None else f"{result['fid']['mean']:.2f} ± {result['fid']['half_range']:.2f}"

    print(f"\nFID against the {len(real_test)}-image test split ({args.samples} samples; mean ± half range over seeds {args.seeds})")
    print(format_table(
        ["sampler", "steps", "NFE", "genlab FID", "diffusers FID"],
        [[r["label"].rsplit("-", 1)[0], r["steps"], ours[r["label"]]["nfe"], cell(ours[r["label"]]),
          cell(theirs.get(r["label"]) if theirs else None)] for r in rows],
    ))  # fmt: skip
    lines = verdicts(rows, ours, theirs)
    print()
    print("\n".join(lines))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")

    report = {
        "benchmark": "diffusers_digits",
        "environment": environment(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "parameters": {"genlab": genlab_params, "diffusers": diffusers_params},
        "training": training,
        "fid": {"genlab": ours, "diffusers": theirs},
        "verdicts": lines,
    }
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
