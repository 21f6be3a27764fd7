"""The seam of an inpainted region with and without a blurred mask edge (issue 17's regenerate-a-region
workflow): `genlab.apps.editing.seam_energy` (the mean squared gradient within 3 pixels of the region's
border) of inpainted held-out images at each --blurs sigma, beside the same measure on the untouched
images (what a seamless edit would show), and the share of pixels kept exactly.

A diffusion run is trained on --data with its defaults (or --steps), or taken from --run. The region
is the central square of a third of the side; each image is inpainted once per blur with the same seed.

    .venv/bin/python benchmarks/inpaint_seam.py --data digits --threads 2
    .venv/bin/python benchmarks/inpaint_seam.py --run runs/ddpm-mnist --data mnist --data-root ../shared/datasets
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.apps.editing import inpaint, regenerate, seam_energy, soft_keep_mask  # noqa: E402
from _common import add_run_options, environment, format_table, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--run", default=None, help="a trained diffusion run (default: train --model on --data)")
    parser.add_argument("--model", default="ddpm")
    parser.add_argument("--blurs", default="0,0.5,1,1.5", help="mask_blur sigmas in pixels, comma-separated")
    parser.add_argument("--strength", type=float, default=1.0, help="1: inpaint from noise; below: regenerate the region from that strength")
    parser.add_argument("-n", type=int, default=200, help="held-out images (default 200)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = genlab.data.load(args.data, root=args.data_root, seed=0)
    if args.run:
        model = genlab.load(args.run)
    else:
        torch.manual_seed(0)
        model = genlab.create(args.model, data=data)
        start = time.perf_counter()
        options = {"max_steps": 20} if args.quick else ({"max_steps": args.steps} if args.steps else {})
        model = genlab.fit(model, data, progress=False, sample_every=0, checkpoint_every=0, tensorboard=False, **options).sampling_model
        print(f"trained {model.name} on {data.spec.name} in {time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    x = data.split("test").tensors()[0][: 8 if args.quick else args.n]
    _, height, width = x.shape[1:]
    keep = torch.ones(1, 1, height, width, dtype=torch.bool)
    top, left = height // 3, width // 3
    keep[..., top : top + height // 3, left : left + width // 3] = False
    rows = {"untouched images": {"seam": float(seam_energy(x, keep).mean()), "kept": 1.0}}
    for blur in [float(b) for b in args.blurs.split(",")]:
        generator = torch.Generator().manual_seed(0)
        if args.strength >= 1.0:
            y = inpaint(model, x, keep, mask_blur=blur, generator=generator)
        else:
            y = regenerate(model, x, strength=args.strength, mask=keep, mask_blur=blur, generator=generator)
        weight = soft_keep_mask(keep, blur, model.spec) if blur else keep.float()
        rows[f"mask_blur {blur:g}"] = {"seam": float(seam_energy(y, keep).mean()), "kept": float((weight == 1).float().mean())}
        print(f"mask_blur {blur:g}: seam energy {rows[f'mask_blur {blur:g}']['seam']:.4f}", flush=True)
    print(f"\n{model.name} on {data.spec.name}: {len(x)} held-out images, central {height // 3}x{width // 3} region, "
          f"strength {args.strength:g}")
    print(format_table(["", "seam energy", "pixels kept exactly"], [[k, r["seam"], r["kept"]] for k, r in rows.items()]))
    write_json(args.json, {"settings": vars(args), "environment": environment(), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
