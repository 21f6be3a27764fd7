"""`genlab` command line: parses words, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

from genlab.errors import ConfigError, GenlabError


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="DIR", help="folder holding mnist/, fashion-mnist/, cifar10/ (default: $GENLAB_DATA or ./data)")
    p.add_argument("--data-option", metavar="KEY=VALUE", action="append", default=[],
                   help="loader option, e.g. resize=32, grayscale=true, target=label (repeatable)")


def _add_sampler_options(p: argparse.ArgumentParser, steps_help: str, sampler_help: str, choices: Sequence[str]) -> None:
    """--steps and --sampler of the commands that run a diffusion model's sampler."""
    p.add_argument("--steps", type=int, default=None, help=f"{steps_help} (default: the model's)")
    p.add_argument("--sampler", default=None, choices=choices, metavar="NAME",
                   help=f"{sampler_help}, one of {', '.join(choices)} (default: auto, the model's own)")


def _add_train_options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A flag per TrainConfig field; returns the actions by field name (their help shows the default)."""
    from genlab.train import TrainConfig

    group = p.add_argument_group("training (genlab.fit keywords)")
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    actions = {}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        shown = f"(default: {_word(getattr(defaults, f.name))})"
        if hints[f.name] is bool:
            actions[f.name] = group.add_argument(flag, dest=f"train_{f.name}", action=argparse.BooleanOptionalAction, default=None, help=shown)
        else:
            actions[f.name] = group.add_argument(flag, dest=f"train_{f.name}", metavar=f.name.upper(), default=None, help=shown)
    return actions


class _TrainHelp(argparse.Action):
    """-h/--help of `genlab train`: after a model name, also that model's --set fields and the training
    defaults it really uses (its train_defaults over TrainConfig's), in place of the engine's."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, default: Any = argparse.SUPPRESS,
                 help: str | None = None) -> None:  # noqa: A002 (argparse's keyword)
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)
        self.train_actions: dict[str, argparse.Action] = {}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        if getattr(namespace, "model", None):
            parser.epilog = _model_help(namespace, self.train_actions)
        parser.print_help()
        parser.exit()


def _word(value: Any) -> str:
    """A value as `--set` takes it: true/false, none, comma lists."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(_word(v) for v in value)
    return str(value)


def _model_help(args: argparse.Namespace, train_actions: dict[str, argparse.Action]) -> str:
    import shutil

    import genlab
    from genlab import registry
    from genlab.config import parse_assignments
    from genlab.train import TrainConfig

    try:
        entry = registry.get(args.model)
    except GenlabError as exc:
        return str(exc)
    data = args.data or "digits"
    built = None
    try:  # the defaults of some families depend on the data (e.g. GANs on vectors train longer)
        built = genlab.create(entry.name, data=genlab.data.load(data, **_data_options(args)), **parse_assignments(args.set))
        defaults, where = built.training_defaults(), f"{entry.name} on {data}"
    except GenlabError as exc:
        defaults = entry.model_class.train_defaults if isinstance(entry.model_class.train_defaults, dict) else {}
        where = f"{entry.name} (not built on {data}: {exc})"
    train = TrainConfig.from_dict(defaults)
    for name, action in train_actions.items():
        action.help = f"(default: {_word(getattr(train, name))})"
    width = max(80, shutil.get_terminal_size().columns) - 1
    lines = [f"{entry.name} ({entry.family}): {entry.summary}", "", f"model fields (--set FIELD=VALUE; {entry.config_class.__name__}):"]
    for f, text in zip(dataclasses.fields(entry.config_class), entry.config_class.field_docs().values()):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        head = f"  {f.name}={_word(value)}"
        used = getattr(built.config, f.name) if built is not None else value
        if used != value:  # a default the model resolved for this data and machine (e.g. the size preset's)
            head += f" ({_word(used)})"
        line = f"{head:<34} {text}".rstrip() if text else head
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    lines += ["", f"the training options above show the defaults of {where}"]
    if built is not None and "preset" in entry.config_class.field_names():
        from genlab.nn.presets import auto_preset_reason

        lines += [f"values in brackets are what the defaults resolved to on {data}; preset {auto_preset_reason()}"]
    return "\n".join(lines)


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len("train_"):]: v for k, v in vars(args).items() if k.startswith("train_") and v is not None}


def _add_class_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--class", dest="classes", metavar="K", default=None,
                   help=f"class-conditional runs: {what} of class K (an index or a class name), of several (1,4,7) or of "
                        "all, one grid row per class")
    p.add_argument("--guidance-scale", type=float, default=None, metavar="W",
                   help="class-conditional diffusion runs: classifier-free guidance w (0: none; default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    from genlab.apps.anomaly import AUTO_ORDER as anomaly_auto_order
    from genlab.apps.anomaly import BOUND_SAMPLES as anomaly_bound_samples
    from genlab.apps.anomaly import CORRECTIONS as anomaly_corrections
    from genlab.apps.anomaly import SCORES as anomaly_scores
    from genlab.apps.sampling import DEFAULT_PER_CLASS, DEFAULT_SAMPLES
    from genlab.models.diffusion.samplers import SAMPLERS

    parser = argparse.ArgumentParser(prog="genlab", description="Deep generative models: train, sample, evaluate, look.")
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads for torch (default: torch's choice). On a machine other processes share, 1 thread per "
             "process is often faster: threads waiting for each other spin",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sampler_choices = ("auto", *SAMPLERS)

    sub.add_parser("list", help="models and datasets, a line each", description="List registered models and known datasets.")

    p = sub.add_parser("train", help="train a model", description="Train MODEL on --data; writes a run directory.",
                       add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    train_help = p.add_argument("-h", "--help", action=_TrainHelp,
                                help="show this help and exit; after MODEL, also its --set fields and training defaults")
    p.add_argument("model", help="model name (see `genlab list`)")
    p.add_argument("--data", default=None, help="dataset name or path (default: digits; with --resume, the run's own)")
    _add_data_options(p)
    p.add_argument("--set", metavar="FIELD=VALUE", action="append", default=[], help="model config field, e.g. --set latent_dim=16 (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/MODEL-DATA, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train_help.train_actions = _add_train_options(p)

    p = sub.add_parser(
        "balance", help="add generated samples of the rare classes to a labelled dataset",
        description="Count DATA's classes, generate samples of the classes that have too few with a class-conditional run "
                    "(--run, or one trained here with --model), and write DATA with them to --out in DATA's own format: "
                    "a CSV (its rows, then the synthetic ones), a folder of class sub-folders (a copy, with synthetic-*.png "
                    "images), or an .npz (a named dataset too).",
    )  # fmt: skip
    p.add_argument("data", help="labelled data: a CSV (with --data-option target=COLUMN), an image folder with class sub-folders, "
                                "an .npz with labels, or a dataset name")
    p.add_argument("--out", metavar="PATH", required=True, help="file or folder to write, in DATA's format (.csv, a folder, .npz)")
    p.add_argument("--counts", default="balance", metavar="GOAL",
                   help="balance (every class up to the largest; default), N (every class up to at least N), or CLASS=N,... "
                        "(those classes up to N; a class by name or index)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--run", metavar="DIR", default=None, help="a trained class-conditional run on this data")
    group.add_argument("--model", default=None, metavar="NAME",
                       help=f"the model to train when no --run is given: {', '.join(_balance_models())} "
                            "(default: tabular for tables, ddpm for images and vectors)")
    p.add_argument("--set", metavar="FIELD=VALUE", action="append", default=[], help="--model's config fields, as in genlab train")
    p.add_argument("--run-out", metavar="DIR", default=None, help="where --model's run is written (default: runs/balance-MODEL-DATA)")
    p.add_argument("--mark-synthetic", metavar="COLUMN", default=None, help="CSV only: add COLUMN, true on the generated rows")
    p.add_argument("--sampler", default=None, choices=sampler_choices, metavar="NAME", help="diffusion runs: the sampler")
    p.add_argument("--steps", type=int, default=None, help="diffusion runs: sampler steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, metavar="W", help="diffusion runs: classifier-free guidance w")
    _add_data_options(p)
    _add_train_options(p)  # --seed seeds the training and the samples, --device runs both

    p = sub.add_parser(
        "anomaly", help="score how unusual each sample of a dataset is under a trained run",
        description="Score every sample of DATA with RUN's model (higher = more anomalous) and write --out, a CSV with one "
                    "row per sample in DATA's order: index, source (row number or file name), score, anomaly (0/1) and, "
                    "for tables with a per-dimension score, unusual_columns; and pictures beside it. The threshold flags "
                    "--contamination of the normal samples: --normal's, or the run's own validation split.",
    )  # fmt: skip
    p.add_argument("run", help="run directory of a model trained on normal data")
    p.add_argument("--data", required=True, help="the data to score: a CSV for a table run, else a dataset name or path")
    p.add_argument("--out", metavar="PATH", default="scores.csv", help="the CSV to write (default: scores.csv)")
    p.add_argument("--normal", metavar="DATA", default=None, help="normal data that sets the threshold (default: the run's validation split)")
    p.add_argument("--score", default="auto", choices=["auto", *anomaly_scores],
                   help="the anomaly score (default auto: the cheapest the model offers, in the order " + ", ".join(anomaly_auto_order) + ")")
    p.add_argument("--contamination", type=float, default=0.05, metavar="RATE", help="share of normal samples flagged (default 0.05)")
    p.add_argument("--correction", default="none", choices=anomaly_corrections,
                   help="complexity: a likelihood score in bits minus the image's PNG length (Serra et al. 2020), for "
                        "out-of-distribution images a likelihood ranks too normal (default none)")
    p.add_argument("--background", metavar="RUN", default=None,
                   help="a run of a background model: its likelihood score is subtracted (Ren et al. 2019's likelihood ratio)")
    p.add_argument("--truth", metavar="COLUMN_OR_CSV", default=None,
                   help="the known anomalies (0/1): a column of the scored CSV, or a CSV with one row per sample; adds AUROC, "
                        "average precision and the ROC curve")
    p.add_argument("--bound-samples", type=int, default=anomaly_bound_samples, metavar="K",
                   help=f"the IWAE's k for a VAE's bound score (default {anomaly_bound_samples})")
    p.add_argument("--inversion-steps", type=int, default=0, metavar="N",
                   help="Adam steps refining a GAN's inversion z = E(x) for the inversion score (default 0: f-AnoGAN's "
                        "encoder alone; AnoGAN took hundreds)")
    p.add_argument("--no-pictures", action="store_true", help="skip the pictures beside --out (score histograms, the most and "
                   "least anomalous images with their score maps, the ROC curve)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scores' random draws (the IWAE's latents, the ODE's probes, the noise)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: where the run loads)")
    _add_data_options(p)

    p = sub.add_parser(
        "encode", help="write the codes an encoder run gives each sample of a dataset",
        description="Encode every sample of DATA with RUN's encoder (vae, ae, dae, wae, aae, vq-vae, dvae; read as the run "
                    "reads its data) and write --out, a NumPy .npz: codes (N, *latent shape), names, and where there are "
                    "some labels, class_names, split (train/val/test) and, for vq-vae and dvae, indices (the code grid).",
    )  # fmt: skip
    p.add_argument("run", help="run directory of an encoder model")
    p.add_argument("--data", required=True, help="the data to encode: a dataset name or path (a CSV for a table run)")
    p.add_argument("--out", metavar="PATH", default="latents.npz", help="the .npz to write (default: latents.npz)")
    p.add_argument("--label-column", metavar="COLUMN", default=None, help="a table's column stored as the labels")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: where the run loads)")
    _add_data_options(p)

    p = sub.add_parser("sample", help="draw samples from a trained run",
                       description="Sample from RUN and write a grid or plot, the tensor (.npy, .pt) or, for a table, its rows (.csv).")
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=int, default=None,
                   help=f"number of samples (default {DEFAULT_SAMPLES}); with several classes, of each class (default {DEFAULT_PER_CLASS})")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="file to write (default: RUN/sample.png): a picture, .npy or .pt (the tensor), or .csv (a table run's rows, "
                        "with its columns, dtypes and categories)")
    _add_class_options(p, "samples")
    p.add_argument("--sampler", default=None, choices=sampler_choices, metavar="NAME",
                   help=f"diffusion runs: the sampler, one of {', '.join(sampler_choices)} (default: auto, the model's own)")
    p.add_argument("--steps", type=int, default=None, help="diffusion runs: sampler steps (default: the model's)")
    p.add_argument("--prompt", metavar="TEXT", default=None,
                   help="text-ddpm runs: what to draw, e.g. \"a sneaker\" (guided by --guidance-scale, default the run's)")
    p.add_argument("--then", metavar="RUN_B", default=None,
                   help="diffusion runs: a second run on the same data that finishes the reverse process from --at")
    p.add_argument("--at", type=float, default=None, metavar="SHARE",
                   help="with --then: the share of the way from data to noise where RUN_B takes over, in (0, 1), e.g. 0.5")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="table runs: draw rows from p(row | COLUMN = VALUE), by conditioning, not rejection (repeatable): "
                        "the columns a tabular run conditions on (condition_on), or the label column of a class-conditional run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their EMA")
    p.add_argument("--device", default=None)

    p = sub.add_parser("eval", help="evaluate a trained run", description="FID, KID, precision, recall against held-out data, and the likelihood; for a table run also its quality, detection, efficacy and privacy.")
    p.add_argument("run", help="run directory")
    p.add_argument("--extractor", default=None, help="feature extractor: a dataset name with shipped weights (digits, mnist, fashion_mnist, cifar10), a .safetensors classifier or pytorch-fid's Inception .pth")
    p.add_argument("-n", type=int, default=None, help="samples to draw (default: as many as the held-out split)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--baseline", action="append", default=[], choices=("gmm",), help="also evaluate a baseline fitted to the same training data")
    p.add_argument("--likelihood-n", type=int, default=None, metavar="N", help="held-out samples for costly likelihoods, e.g. a diffusion model's ODE likelihood (default 256)")
    p.add_argument("--target", default=None, metavar="COLUMN",
                   help="table runs: the column to predict for machine-learning efficacy (default: the data's target)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--device", default=None)
    _add_data_options(p)

    p = sub.add_parser("info", help="what a run holds", description="Config, last metrics and the pictures of a run.")
    p.add_argument("run", help="run directory")

    p = sub.add_parser(
        "inpaint", help="inpaint or regenerate an image with a diffusion run",
        description="Inpaint the white region of --mask in --image, or, without --mask, regenerate the whole image from "
                    "its noised version (SDEdit); writes input | mask | results as a PNG grid.",
    )  # fmt: skip
    p.add_argument("run", help="run directory of a diffusion model")
    p.add_argument("--image", metavar="FILE", required=True, help="PNG or JPEG, resized to the model's size")
    p.add_argument("--mask", metavar="FILE", default=None, help="PNG or JPEG: white = region to regenerate, black = keep")
    p.add_argument("--strength", type=float, default=None,
                   help="SDEdit strength in [0, 1], how much changes (default: 0.5 without --mask; with --mask, 1: inpaint from noise)")
    p.add_argument("--from-step", type=int, default=None, metavar="K",
                   help="start the regeneration at step K of a DDPM run's T steps (strength K / T; only the --mask region changes)")
    p.add_argument("--mask-blur", type=float, default=0.0, metavar="PIXELS",
                   help="soften the mask's edge over about 2 x PIXELS outside the region, so it blends in (default 0: a hard edge)")
    _add_sampler_options(p, "steps of a full sampling trajectory", "the sampler", sampler_choices)
    p.add_argument("-n", type=int, default=4, help="number of variations (of each class with --class; default 4)")
    _add_class_options(p, "variations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", default=None, help="PNG to write (default: RUN/inpaint.png)")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their EMA")
    p.add_argument("--device", default=None)

    p = sub.add_parser(
        "upscale", help="upscale images with a super-resolution run (sr3, sr-regression)",
        description="Read --image (a file, or a folder of images) at RUN's low resolution (its side / scale; another size "
                    "is resized to it) and write the upscaled PNG(s) to --out (a file, or a folder of PNGs named as the inputs).",
    )  # fmt: skip
    p.add_argument("run", help="run directory of sr3 or sr-regression")
    p.add_argument("--image", metavar="PATH", required=True, help="a PNG or JPEG, or a folder of them")
    p.add_argument("--out", metavar="PATH", required=True, help="high.png for one image, a folder for a folder")
    _add_sampler_options(p, "sr3: sampler steps", "sr3: the sampler", sampler_choices)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their EMA")
    p.add_argument("--device", default=None)

    p = sub.add_parser(
        "latent", help="latent-space pictures of an encoder run (interpolate, latent map, rate-distortion)",
        description="Run the latent tools of genlab.apps.latent on a held-out split with the run of an encoder model "
                    "(vae, beta-vae, ae, dae, wae, aae, vq-vae, dvae) and write PNG and JSON files into --out. "
                    "With no tool named: --interpolate --latent-map --rate-distortion.",
    )  # fmt: skip
    p.add_argument("run", help="run directory of an encoder model")
    p.add_argument("--interpolate", action="store_true", help="decode the paths between the codes of --pairs pairs of samples")
    p.add_argument("--latent-map", action="store_true", help="the codes on their first two principal axes, coloured by label")
    p.add_argument("--rate-distortion", action="store_true", help="bits per image of quantized codes against reconstruction MSE")
    p.add_argument("--transfer-attribute", nargs=2, type=int, metavar=("SOURCE", "TARGET"), default=None,
                   help="shift the codes of class SOURCE by the difference of the class means (TARGET - SOURCE) and decode")
    p.add_argument("--out", metavar="DIR", default=None, help="folder to write (default: RUN/latent)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("-n", type=int, default=None, help="use the first N samples of the split (default: all)")
    p.add_argument("--pairs", type=int, default=8, help="interpolation pairs (default 8)")
    p.add_argument("--steps", type=int, default=8, help="points per interpolation, both ends included (default 8)")
    p.add_argument("--method", default="slerp", choices=("slerp", "lerp"), help="interpolation (default slerp)")
    p.add_argument("--strength", type=float, default=1.0, help="multiple of the attribute vector added (default 1)")
    p.add_argument("--seed", type=int, default=0, help="chooses the interpolation pairs")
    p.add_argument("--no-ema", action="store_true", help="use the trained weights, not their EMA")
    p.add_argument("--device", default=None)
    _add_data_options(p)
    for command in sub.choices.values():  # --threads after the command too; SUPPRESS keeps a value given before it
        command.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N", help="CPU threads for torch, the same as `genlab --threads N` before the command")
    return parser


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    from genlab.config import parse_assignments

    options: dict[str, Any] = parse_assignments(args.data_option, flag="--data-option", example="resize=32")
    if args.data_root:
        options["root"] = args.data_root
    return options


def cmd_list(args: argparse.Namespace) -> None:
    import genlab.data
    from genlab import registry

    print("models:")
    for e in registry.entries():
        if e.family != "test":
            print(f"  {e.name:<16} {e.family:<14} {e.summary}")
    print("datasets:")
    for name, summary in genlab.data.list_datasets():
        print(f"  {name:<16} {summary}")


def say(*args: Any) -> None:
    """print, on the first process only (under torchrun every process runs the command)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args)


def _default_out(model: str, data: str) -> Path:
    stem = f"{model}-{Path(data).stem if ('/' in data or '.' in data) else data}"
    out = Path("runs") / stem
    k = 2
    while (out / "state.pt").exists():
        out = Path("runs") / f"{stem}-{k}"
        k += 1
    return out


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    import genlab
    from genlab.config import parse_assignments, parse_value

    fields = parse_assignments(args.set)
    if args.resume:
        from genlab.train.run import resume_settings

        if not args.out:
            raise ConfigError("--resume needs --out, the run directory to continue")
        saved_fields, saved_source = resume_settings(args.out, args.model)
        fields = {**saved_fields, **fields}
        # the run's own data unless told otherwise; fit refuses another dataset or split
        if args.data is None:
            data = genlab.data.load(**{**saved_source, **_data_options(args)})
        else:
            data = genlab.data.load(args.data, **_data_options(args))
    else:
        data = genlab.data.load(args.data or "digits", **_data_options(args))
        if args.train_init is not None:  # fine-tuning: the run's architecture, changed only by --set
            from genlab.train.finetune import init_model_fields

            fields = {**init_model_fields(args.train_init, args.model), **fields}
    out = Path(args.out) if args.out else _default_out(args.model, args.data or "digits")
    # the initial weights come from torch's global generator: seed it, so that --seed fixes the whole run
    torch.manual_seed(parse_value(_train_options(args).get("seed", 0), int, "TrainConfig.seed"))
    model = genlab.create(args.model, data=data, **fields)
    say(f"training {model.name} on {data!r} -> {out}")
    run = genlab.fit(model, data, out=out, resume=args.resume, **_train_options(args))
    last = next((r for r in reversed(run.history) if r["split"] == "train"), {})
    terms = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k not in ("step", "split", "lr", "examples_per_s"))
    say(f"done: {run.step} steps; last logged {terms}")
    paths = run.paths
    say("wrote:")
    say(f"  samples      {paths.final_samples}")
    say(f"  curves       {paths.curves}")
    say(f"  weights      {paths.weights}" + (f" and {paths.ema_weights.name}" if paths.ema_weights.exists() else ""))
    say(f"  metrics      {paths.metrics}")
    say(f"  config       {paths.config}")
    drawn = "-n 1000 --out synth.csv" if run.model.spec.kind == "table" else "-n 64 --out grid.png"
    say(f"next: genlab sample {out} {drawn};  genlab eval {out};  genlab info {out}")


def cmd_sample(args: argparse.Namespace) -> None:
    from genlab.apps.sampling import parse_where, sample_run

    out, samples = sample_run(
        args.run, args.out, n=args.n, classes=args.classes, sampler=args.sampler, steps=args.steps,
        guidance_scale=args.guidance_scale, seed=args.seed, ema=not args.no_ema, device=args.device,
        where=parse_where(args.where), then=args.then, at=args.at, prompt=args.prompt,
    )  # fmt: skip
    chosen = [] if samples.labels is None else list(dict.fromkeys(samples.labels.tolist()))
    classes = f" of class{'es' if len(chosen) > 1 else ''} {','.join(map(str, chosen))}" if chosen else ""
    given = f" where {', '.join(args.where)}" if args.where else ""
    handed = f" ({args.run} then {args.then} from {args.at:g} of the way)" if args.then else (f" for {args.prompt!r}" if args.prompt else "")
    print(f"wrote {len(samples.x)} samples{classes}{given}{handed} of shape {tuple(samples.x.shape[1:])} to {out}")


def _balance_models() -> list[str]:
    """Models that can generate chosen classes: the tabular model and those with class_conditional."""
    from genlab import registry

    return [e.name for e in registry.entries() if e.family != "test" and
            {"class_conditional", "condition_on"} & set(e.config_class.field_names())]


def cmd_balance(args: argparse.Namespace) -> None:
    from genlab.apps.balance import balance
    from genlab.config import parse_assignments, parse_value

    train = _train_options(args)
    seed = parse_value(train.get("seed", 0), int, "--seed")
    sampling = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps), ("guidance_scale", args.guidance_scale))
                if v is not None}
    result = balance(
        args.data, args.out, run=args.run, model=args.model, counts=args.counts, data_options=_data_options(args),
        fields=parse_assignments(args.set), train_options=train, run_out=args.run_out, seed=seed,
        device=train.get("device"), mark=args.mark_synthetic, sampling=sampling, say=say,
    )  # fmt: skip
    width = max(len(k) for k in result.before)
    for name, n in result.before.items():
        say(f"  {name:<{width}} {n:>8} -> {result.after[name]}")
    via = f" by {result.run}" if result.run is not None and result.added else ""
    say(f"wrote {result.out} ({result.format}): {sum(result.before.values())} samples and {result.added} generated{via}")


def cmd_encode(args: argparse.Namespace) -> None:
    from genlab.apps.features import encode, write_codes

    codes = encode(args.run, args.data, data_options=_data_options(args), label_column=args.label_column, device=args.device)
    out = write_codes(codes, args.out)
    extra = ", ".join(name for name, value in (("indices", codes.indices), ("labels", codes.labels), ("split", codes.split))
                      if value is not None)
    say(f"wrote {out}: codes {tuple(codes.codes.shape)} of {codes.model}" + (f", with {extra}" if extra else ""))


def cmd_anomaly(args: argparse.Namespace) -> None:
    from genlab.apps.anomaly import score_data

    result = score_data(args.run, args.data, args.out, normal=args.normal, score=args.score, contamination=args.contamination,
                        correction=args.correction, background=args.background, truth=args.truth, pictures=not args.no_pictures,
                        bound_samples=args.bound_samples, inversion_steps=args.inversion_steps,
                        data_options=_data_options(args), device=args.device, seed=args.seed)
    say(f"wrote {result.out}: {result.n} samples scored by {result.score}, {result.flagged} above the threshold {result.threshold:.4g}")
    if result.auroc is not None:
        say(f"against --truth: AUROC {result.auroc:.4f}, average precision {result.average_precision:.4f}")
    for picture in result.pictures:
        say(f"wrote {picture}")


def cmd_eval(args: argparse.Namespace) -> None:
    from genlab.apps.evaluate import evaluate_run
    from genlab.metrics.report import format_report

    report = evaluate_run(
        args.run, extractor=args.extractor, n=args.n, split=args.split, baselines=args.baseline,
        seed=args.seed, ema=not args.no_ema, device=args.device, data_options=_data_options(args), likelihood_n=args.likelihood_n,
        target=args.target,
    )
    print(format_report(report))
    print(f"wrote {Path(args.run) / 'eval.json'}")


def cmd_info(args: argparse.Namespace) -> None:
    from genlab.train import RunPaths, read_metrics, read_run_config

    cfg = read_run_config(args.run)
    paths = RunPaths(Path(args.run))
    print(f"run      {paths.root}")
    print(f"model    {cfg['model']}  {cfg['model_config']}")
    print(f"data     {cfg['data']}  shape {tuple(cfg['data_spec']['shape'])}")
    rows = read_metrics(args.run)
    train_rows = [r for r in rows if r.get("split") == "train"]
    if train_rows:
        last = train_rows[-1]
        print(f"step     {last['step']} of {cfg['train']['max_steps']}")
        print("train    " + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))
    val_rows = [r for r in rows if r.get("split") == "val"]
    if val_rows:
        print("val      " + ", ".join(f"{k}={v:.4g}" for k, v in val_rows[-1].items() if isinstance(v, float)))
    if (paths.root / "eval.json").is_file():
        import json

        ev = json.loads((paths.root / "eval.json").read_text())
        print("eval     " + ", ".join(f"{k}={v:.4g}" for k, v in ev.get("model", {}).items() if isinstance(v, float)))
    if train_rows and not paths.curves.is_file():
        from genlab.viz import plot_training_curves

        plot_training_curves(rows, paths.curves)
    pictures = sorted(p for p in paths.root.rglob("*.png"))
    print("pictures")
    for p in pictures:
        print(f"  {p}")


def cmd_inpaint(args: argparse.Namespace) -> None:
    import genlab
    from genlab.apps.editing import edit_image_file

    model = genlab.load(args.run, ema=not args.no_ema, device=args.device)
    out = edit_image_file(
        model, args.image, mask=args.mask, strength=args.strength, n=args.n, steps=args.steps,
        sampler=args.sampler, seed=args.seed, out=Path(args.out) if args.out else Path(args.run) / "inpaint.png",
        classes=args.classes, guidance_scale=args.guidance_scale, mask_blur=args.mask_blur, from_step=args.from_step,
    )  # fmt: skip
    each = f" of each class ({args.classes})" if args.classes is not None else ""
    print(f"wrote {args.image}, {'its mask, ' if args.mask else ''}{args.n} result{'s' if args.n != 1 else ''}{each} side by side to {out}")


def cmd_upscale(args: argparse.Namespace) -> None:
    import genlab
    from genlab.apps.upscale import upscale_files

    model = genlab.load(args.run, ema=not args.no_ema, device=args.device)
    written = upscale_files(model, args.image, args.out, seed=args.seed, steps=args.steps, sampler=args.sampler)
    channels, height, width = model.spec.shape
    where = written[0] if len(written) == 1 else Path(args.out)
    say(f"wrote {len(written)} image{'s' if len(written) != 1 else ''} upscaled x{model.config.scale} to {height}x{width} to {where}")


def cmd_latent(args: argparse.Namespace) -> None:
    import genlab
    from genlab.apps.latent import write_latent_tools
    from genlab.train.run import read_run_config, run_data_source

    tools = [t for t, chosen in (("interpolate", args.interpolate), ("latent_map", args.latent_map),
                                 ("rate_distortion", args.rate_distortion),
                                 ("transfer_attribute", args.transfer_attribute is not None)) if chosen]
    model = genlab.load(args.run, ema=not args.no_ema, device=args.device)
    data = genlab.data.load(**{**run_data_source(read_run_config(args.run)), **_data_options(args)})
    source, target = args.transfer_attribute or (None, None)
    written = write_latent_tools(
        model, data, Path(args.out) if args.out else Path(args.run) / "latent",
        tools=tools or ("interpolate", "latent_map", "rate_distortion"), split=args.split, n=args.n, pairs=args.pairs,
        steps=args.steps, method=args.method, source=source, target=target, strength=args.strength, seed=args.seed,
    )  # fmt: skip
    for tool, paths in written.items():
        print(f"{tool:<19} " + ", ".join(str(p) for p in paths))


COMMANDS = {"list": cmd_list, "train": cmd_train, "sample": cmd_sample, "balance": cmd_balance, "anomaly": cmd_anomaly, "encode": cmd_encode, "eval": cmd_eval, "info": cmd_info, "inpaint": cmd_inpaint,
            "latent": cmd_latent, "upscale": cmd_upscale}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"genlab: error: --threads {args.threads}: give 1 or more", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        COMMANDS[args.command](args)
    except GenlabError as exc:
        print(f"genlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genlab {args.command}: interrupted" + ("; continue with --resume" if args.command == "train" else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
