"""Super-resolution side by side: SR3, its regression baseline (the same UNet trained with L2) and
bicubic upsampling, by PSNR, SSIM and FID on held-out images (issue 17).

Cases (the low-resolution image is the high-resolution one averaged over scale x scale blocks):
- mnist-7-28: MNIST 7x7 -> 28x28 (scale 4), trained on the training split, scored on --n test images;
- mnist-14-28: MNIST 14x14 -> 28x28 (scale 2), likewise;
- faces-16-64: the Olivetti faces 16x16 -> 64x64 (scale 4), trained on 8 images of each of the 40
  people, scored on the other 80.
PSNR and SSIM as `genlab.metrics.image_quality` (scikit-image's); FID against the held-out
high-resolution images in the shipped MNIST extractor's features (the faces resized to 28x28 by area
for it: there is no shipped face extractor, so the faces' FIDs rank the three methods only, on 80
images). Models train with their defaults, or --steps.

    .venv/bin/python benchmarks/super_resolution.py --data-root ../shared/datasets --threads 2
    .venv/bin/python benchmarks/super_resolution.py --quick       # a smoke run: numbers mean nothing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.metrics.evaluate import evaluate_samples  # noqa: E402
from genlab.metrics.image_quality import psnr, ssim  # noqa: E402
from genlab.models.diffusion.super_resolution import degrade, upsample  # noqa: E402
from _common import add_run_options, environment, format_table, rank_within_groups, write_json  # noqa: E402

CASES = {"mnist-7-28": ("mnist", 4), "mnist-14-28": ("mnist", 2), "faces-16-64": ("faces", 4)}
MODELS = ("sr3", "sr-regression")


def case_data(case: str, root: str, work: Path, n: int):
    source, scale = CASES[case]
    if source == "mnist":
        data = genlab.data.load("mnist", root=root, seed=0)
        return data.split("train"), data.split("test").tensors()[0][:n], scale
    faces = np.load(Path(root) / "olivetti-faces" / "faces.npz", allow_pickle=False)
    np.savez(work / "faces.npz", x=faces["x"][:, None], y=faces["y"])
    data = genlab.data.load(str(work / "faces.npz"), seed=0)
    rank = rank_within_groups(data.labels)
    return data.subset(torch.nonzero(rank < 8).flatten()), data.subset(torch.nonzero(rank >= 8).flatten()).tensors()[0], scale


def fid_features_view(x: torch.Tensor) -> torch.Tensor:
    """Images as the MNIST extractor takes them: one channel, 28x28 (area resizing)."""
    x = x.float().mean(1, keepdim=True) if x.shape[1] != 1 else x.float()
    return x if x.shape[-1] == 28 else F.interpolate(x, size=(28, 28), mode="area")


def scores(made: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    fid = evaluate_samples(fid_features_view(truth), fid_features_view(made), "mnist", generator=torch.Generator().manual_seed(0))["fid"]
    return {"psnr": float(psnr(made, truth).mean()), "ssim": float(ssim(made, truth).mean()), "fid": float(fid)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated from {', '.join(CASES)}")
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--n", type=int, default=1000, help="held-out MNIST images scored (default 1000)")
    parser.add_argument("--sample-steps", type=int, default=None, help="sr3's sampler steps (default: the model's)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as work:
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            if case not in CASES:
                parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
            train, truth, scale = case_data(case, args.data_root, Path(work), 64 if args.quick else args.n)
            low = degrade(truth, scale)
            rows = {"bicubic": scores(upsample(low, tuple(truth.shape[-2:]), (0.0, 1.0)), truth)}
            for name in [m.strip() for m in args.models.split(",") if m.strip()]:
                torch.manual_seed(0)
                model = genlab.create(name, data=train, scale=scale)
                options = {"max_steps": 20} if args.quick else ({"max_steps": args.steps} if args.steps else {})
                start = time.perf_counter()
                model = genlab.fit(model, train, progress=False, sample_every=0, checkpoint_every=0, tensorboard=False,
                                   **options).sampling_model.eval()
                fit_s = time.perf_counter() - start
                sampling = {"steps": args.sample_steps} if name == "sr3" and args.sample_steps else {}
                start = time.perf_counter()
                made = torch.cat([model.upscale(part, generator=torch.Generator().manual_seed(i), **sampling)
                                  for i, part in enumerate(low.split(250))])
                rows[name] = {**scores(made, truth), "fit_s": fit_s, "upscale_s": time.perf_counter() - start}
                print(f"{case}: {name}: PSNR {rows[name]['psnr']:.2f}, SSIM {rows[name]['ssim']:.3f}, FID {rows[name]['fid']:.1f}", flush=True)
            results[case] = rows
            print(f"\n{case}: {len(truth)} held-out images, scale {scale}")
            print(format_table(["method", "PSNR dB", "SSIM", "FID", "fit s", "upscale s"],
                               [[k, r["psnr"], r["ssim"], r["fid"], r.get("fit_s", ""), r.get("upscale_s", "")] for k, r in rows.items()]))
    write_json(args.json, {"settings": vars(args), "environment": environment(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
