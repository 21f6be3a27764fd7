"""`genlab upscale`: a super-resolution run (`sr3`, `sr-regression`) applied to image files.

Each input is read at the run's low resolution (the run's image side / scale; grey levels or RGB as
the run's images; a picture of another size is resized to it, bicubic) and written upscaled as a PNG:
one file for one image, or a folder of PNGs named as the inputs (with .png) for a folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from genlab.apps.editing import read_image
from genlab.data.images import IMAGE_EXTENSIONS
from genlab.errors import ConfigError, DataError
from genlab.files import atomic_path
from genlab.models.base import GenerativeModel

__all__ = ["upscale_files"]


def _write_png(x: torch.Tensor, value_range: tuple[float, float], path: Path) -> None:
    from PIL import Image

    low, high = value_range
    pixels = ((x.float().cpu() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def upscale_files(model: GenerativeModel, image: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
                  batch_size: int = 16, **options) -> list[Path]:
    """Upscale an image file, or every image of a folder (recursively, in sorted order), with the
    run's `upscale`; returns the written PNGs. options: the sampler's (steps, sampler) for sr3."""
    if not callable(getattr(model, "upscale", None)):
        raise ConfigError(f"'{model.name}' does not upscale; train a super-resolution run: "
                          "`genlab train sr3 --data mnist --set scale=4` (or sr-regression)")
    from genlab.models.diffusion.model import DiffusionModel

    options = {k: v for k, v in options.items() if v is not None}
    if options and not isinstance(model, DiffusionModel):
        raise ConfigError(f"'{model.name}' upscales in one deterministic pass; {', '.join('--' + k for k in options)} "
                          "are for sr3's sampler")
    channels, height, width = model.spec.shape
    scale = model.config.scale
    low_spec = dataclasses.replace(model.spec, shape=(channels, height // scale, width // scale))
    source, out = Path(image), Path(out)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"'{source}' holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        if out.suffix:
            raise ConfigError(f"--out {out}: a folder of images is written to a folder; give a folder name without a suffix")
        targets = [out / p.relative_to(source).with_suffix(".png") for p in files]
    else:
        if out.suffix.lower() != ".png":
            raise ConfigError(f"--out {out}: the upscaled image is written as a PNG; name it e.g. high.png")
        files, targets = [source], [out]
    generator = torch.Generator().manual_seed(seed)
    written: list[Path] = []
    for first in range(0, len(files), batch_size):
        low = torch.cat([read_image(p, low_spec) for p in files[first : first + batch_size]])
        high = model.upscale(low, generator=generator, **options)
        for picture, target in zip(high, targets[first : first + batch_size]):
            _write_png(picture, model.spec.value_range, target)
            written.append(target)
    return written
