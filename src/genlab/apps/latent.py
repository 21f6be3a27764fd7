"""Latent-space tools shared by every encoder model (VAE, AE, DAE, WAE, VQ-VAE, dVAE): interpolation,
attribute arithmetic, 2-D latent maps, and rate against distortion.

A model qualifies when it has `encode(x)` (a tensor, or a distribution with `.mean`; `encode_mean(x)`
is preferred when present) and `decode(z)` (decoder parameters, mapped to the data's space by the
model's `decoder_mean` when it has one). `encode_latent` and `decode_latent` apply that rule; latents
keep the model's shape ((B, D) vectors, the VQ-VAE's (B, D, h, w) grid before quantization, the
dVAE's (B, N K) category probabilities), and the VQ-VAE's `decode` quantizes to the nearest codes.

    lerp(z0, z1, t)  = (1 - t) z0 + t z1
    slerp(z0, z1, t) = sin((1 - t) W) / sin W z0 + sin(t W) / sin W z1,  cos W = <z0, z1> / (|z0| |z1|)
                       (Shoemake 1985; White 2016 for generative models: under a Gaussian prior, slerp
                       keeps the norm typical of the prior where lerp passes through low-norm codes)
    attribute shift: z + (m_target - m_source),  m_c the mean code of class c (White 2016, sec. 2.2)
    latent map: codes projected on their first two principal components, coloured by label
    rate-distortion: bits per image of a code against the mean squared error of its reconstruction

Python API (see each function); e.g. on a trained run:

    >>> import genlab, torch
    >>> from genlab.apps.latent import interpolate, latent_map
    >>> model = genlab.load("runs/ae-digits")                               # doctest: +SKIP
    >>> x, y = genlab.data.load("digits").split("test").tensors()            # doctest: +SKIP
    >>> path = interpolate(model, x[:1], x[1:2], steps=8, method="slerp")   # doctest: +SKIP
    >>> latent_map(model, x, y, path="latent_map.png")                       # doctest: +SKIP

`write_latent_tools` runs several of them on a held-out split and writes their pictures and numbers
into a folder; it is what `genlab latent RUN` does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError
from genlab.files import atomic_path

__all__ = [
    "LatentMap",
    "RatePoint",
    "attribute_shift",
    "class_means",
    "decode_latent",
    "encode_latent",
    "interpolate",
    "latent_map",
    "lerp",
    "pca_project",
    "rate_distortion",
    "slerp",
    "transfer_attribute",
    "write_latent_tools",
]

# slerp falls back to lerp when sin W is below this (endpoints (anti)parallel: the great circle is undefined)
_PARALLEL = 1e-6
_CHUNK = 512


# ---------------------------------------------------------------------------------------------
# Encoding and decoding, the same for every encoder model
# ---------------------------------------------------------------------------------------------
def _check_encoder_model(model) -> None:
    if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))):
        kind = getattr(model, "name", "") or type(model).__name__
        raise ConfigError(f"{kind!r} has no encode(x) and decode(z); the latent tools need an encoder model (vae, ae, dae, wae, vq-vae, dvae)")


@torch.no_grad()
def encode_latent(model, x: Tensor) -> Tensor:
    """The model's latent code of x (B, *shape): `encode_mean(x)` if the model has it, else `encode(x)`
    (its `.mean` for a distribution), computed in eval mode in chunks. -> (B, *latent shape)."""
    _check_encoder_model(model)
    was_training = model.training
    model.eval()
    try:
        encode = getattr(model, "encode_mean", None) or model.encode
        parts = []
        for chunk in x.split(_CHUNK):
            out = encode(chunk.to(model.device))
            parts.append(out if isinstance(out, Tensor) else out.mean)
        return torch.cat(parts)
    finally:
        model.train(was_training)


@torch.no_grad()
def decode_latent(model, z: Tensor) -> Tensor:
    """x = the model's decoded mean of codes z (B, *latent shape) in the data's space, (B, *shape)."""
    _check_encoder_model(model)
    was_training = model.training
    model.eval()
    try:
        mean = getattr(model, "decoder_mean", None)
        parts = []
        for chunk in z.split(_CHUNK):
            params = model.decode(chunk.to(model.device))
            parts.append(mean(params) if callable(mean) else params)
        return torch.cat(parts)
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------------------------
def _times(t: Tensor | Sequence[float] | int, like: Tensor) -> Tensor:
    """t as a 1-D tensor of like's dtype; an int n gives n evenly spaced times from 0 to 1."""
    if isinstance(t, int):
        if t < 2:
            raise ConfigError(f"an interpolation needs at least 2 steps (the two endpoints), got {t}")
        return torch.linspace(0.0, 1.0, t, dtype=like.dtype, device=like.device)
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1)


def lerp(z0: Tensor, z1: Tensor, t: Tensor | Sequence[float] | int) -> Tensor:
    """(1 - t) z0 + t z1 for each t: z0, z1 (B, *latent), t (T,) or a number of steps -> (T, B, *latent)."""
    if z0.shape != z1.shape:
        raise DataError(f"interpolation endpoints must have the same shape; got {tuple(z0.shape)} and {tuple(z1.shape)}")
    t = _times(t, z0).view(-1, *([1] * z0.dim()))
    return (1.0 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor | Sequence[float] | int) -> Tensor:
    """Spherical interpolation sin((1-t) W)/sin W z0 + sin(t W)/sin W z1, W the angle between z0 and
    z1 (each row (B,) flattened over its latent axes). With |z0| = |z1| every point keeps that norm;
    otherwise the norm moves smoothly between the two. Rows whose endpoints are (anti)parallel, where
    the great circle is undefined, are interpolated linearly. z0, z1 (B, *latent) -> (T, B, *latent)."""
    if z0.shape != z1.shape:
        raise DataError(f"interpolation endpoints must have the same shape; got {tuple(z0.shape)} and {tuple(z1.shape)}")
    t = _times(t, z0)
    a, b = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)  # (B, D)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(torch.finfo(a.dtype).tiny)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))  # (B,)
    sin = torch.sin(omega)
    linear = sin.abs() < _PARALLEL
    safe_sin = torch.where(linear, torch.ones_like(sin), sin)
    w0 = torch.sin((1.0 - t)[:, None] * omega) / safe_sin  # (T, B)
    w1 = torch.sin(t[:, None] * omega) / safe_sin
    w0 = torch.where(linear, 1.0 - t[:, None], w0)
    w1 = torch.where(linear, t[:, None].expand_as(w1), w1)
    path = w0[:, :, None] * a + w1[:, :, None] * b  # (T, B, D)
    return path.view(t.shape[0], *z0.shape)


def interpolate(model, x0: Tensor, x1: Tensor, *, steps: int | Sequence[float] = 8, method: str = "slerp") -> Tensor:
    """Decode the path between the codes of x0 and x1 (B, *shape): (T, B, *shape) in the data's space.

    Its ends are the model's reconstructions of x0 and x1 (t = 0 and 1 give the codes themselves).
    method: "slerp" or "lerp"; steps: a number of evenly spaced times, or the times themselves."""
    if method not in ("slerp", "lerp"):
        raise ConfigError(f"method={method!r} is unknown; choose 'slerp' or 'lerp'")
    z0, z1 = encode_latent(model, x0), encode_latent(model, x1)
    path = (slerp if method == "slerp" else lerp)(z0, z1, steps)  # (T, B, *latent)
    images = decode_latent(model, path.reshape(-1, *z0.shape[1:]))
    return images.view(path.shape[0], z0.shape[0], *images.shape[1:])


# ---------------------------------------------------------------------------------------------
# Attribute arithmetic
# ---------------------------------------------------------------------------------------------
def class_means(z: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """m_c = mean of the codes z (N, *latent) with label c, (C, *latent); a class without codes gets NaN."""
    labels = torch.as_tensor(labels, device=z.device).long().reshape(-1)
    if labels.shape[0] != z.shape[0]:
        raise DataError(f"{z.shape[0]} codes but {labels.shape[0]} labels")
    c = int(labels.max()) + 1 if num_classes is None else num_classes
    flat = z.reshape(z.shape[0], -1)
    sums = torch.zeros(c, flat.shape[1], dtype=flat.dtype, device=flat.device).index_add_(0, labels, flat)
    counts = torch.bincount(labels, minlength=c).to(flat.dtype)
    return (sums / counts[:, None]).view(c, *z.shape[1:])  # 0 / 0 = NaN marks an empty class


def attribute_shift(z: Tensor, means: Tensor, source: int, target: int, strength: float = 1.0) -> Tensor:
    """z + strength (m_target - m_source): move codes z (B, *latent) along the difference of two class
    means (C, *latent) (White 2016's attribute vectors)."""
    direction = means[target] - means[source]
    if not bool(torch.isfinite(direction).all()):
        raise DataError(f"class {source} or {target} had no codes when the means were taken; pick classes present in the data")
    return z + strength * direction


def transfer_attribute(model, x: Tensor, labels: Tensor, source: int, target: int, *, strength: float = 1.0, x_apply: Tensor | None = None) -> Tensor:
    """Decode codes shifted by the difference of the class means of target and source, the means taken
    over x (N, *shape) with labels (N,); applied to x_apply (default: x's samples of class source).
    -> (B, *shape) in the data's space."""
    z = encode_latent(model, x)
    means = class_means(z, labels.to(z.device))
    if x_apply is None:
        z_apply = z[labels.to(z.device).long() == source]
    else:
        z_apply = encode_latent(model, x_apply)
    return decode_latent(model, attribute_shift(z_apply, means, source, target, strength))


# ---------------------------------------------------------------------------------------------
# 2-D latent maps
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LatentMap:
    """coords (N, 2): codes on their first two principal axes (the codes themselves when D = 2);
    labels (N,) or None; explained: the share of the codes' variance the two axes hold."""

    coords: Tensor
    labels: Tensor | None
    explained: float


def pca_project(z: Tensor, k: int = 2) -> tuple[Tensor, float]:
    """Project codes z (N, D) on their first k principal axes (the right singular vectors of the
    centred codes): (N, k) coordinates and the share of the total variance they explain."""
    flat = z.reshape(z.shape[0], -1).double()
    centred = flat - flat.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    total = float(s.pow(2).sum())
    explained = float(s[:k].pow(2).sum()) / total if total > 0 else 1.0
    return (centred @ vh[:k].T).to(z.dtype), explained


def latent_map(model, x: Tensor, labels: Tensor | None = None, *, path: str | os.PathLike | None = None, class_names: Sequence[str] | None = None) -> LatentMap:
    """Encode x (N, *shape); project the codes to 2-D by PCA when they have more than two dimensions;
    with `path`, draw them coloured by label (`genlab.viz.latent.plot_latent_map`)."""
    z = encode_latent(model, x).reshape(x.shape[0], -1).float().cpu()
    if z.shape[1] == 2:
        coords, explained, axes = z, 1.0, ("z1", "z2")
    else:
        coords, explained = pca_project(z, 2)
        axes = ("PC 1", "PC 2")
    result = LatentMap(coords, None if labels is None else torch.as_tensor(labels).cpu(), explained)
    if path is not None:
        from genlab.viz.latent import plot_latent_map

        name = getattr(model, "name", "") or type(model).__name__
        title = f"{name}: {z.shape[1]}-D codes" + ("" if z.shape[1] == 2 else f" on 2 principal axes ({100 * explained:.0f}% of the variance)")
        if class_names is None:
            class_names = getattr(getattr(model, "spec", None), "class_names", None)
        plot_latent_map(coords, result.labels, path, class_names=class_names, axis_labels=axes, title=title)
    return result


# ---------------------------------------------------------------------------------------------
# Rate against distortion
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RatePoint:
    """One point of a rate-distortion table: `method` names how the bits were counted, `setting`
    the quantization (a step size, or the codebook), bits_per_image the rate, mse the mean squared
    reconstruction error per dimension in data units."""

    method: str
    setting: str
    bits_per_image: float
    mse: float


def _entropy_bits(symbols: Tensor, reference: Tensor | None = None) -> Tensor:
    """Per column of integer symbols (N, M): the plug-in entropy -sum_s p_s log2 p_s of its values,
    or, with reference (R, M), the cross-entropy -mean_n log2 q(s_n) under the reference's add-one
    smoothed frequencies over the union of both sets' values. -> (M,) bits."""
    out = []
    for j in range(symbols.shape[1]):
        column = symbols[:, j]
        if reference is None:
            _, counts = torch.unique(column, return_counts=True)
            p = counts.double() / counts.sum()
            out.append(-(p * torch.log2(p)).sum())
        else:
            values, inverse = torch.unique(torch.cat([reference[:, j], column]), return_inverse=True)
            ref_counts = torch.bincount(inverse[: reference.shape[0]], minlength=values.numel()).double() + 1.0
            q = ref_counts / ref_counts.sum()
            out.append(-torch.log2(q[inverse[reference.shape[0]:]]).mean())
    return torch.stack(out)


def _discrete_code_model(model) -> tuple[int, bool] | None:
    """(codebook size, has a learned prior) for models with discrete codes (VQ-VAE, dVAE), else None."""
    if not callable(getattr(model, "encode_indices", None)):
        return None
    config = model.config
    size = getattr(config, "num_codes", None) or getattr(config, "categories", None)
    return (int(size), callable(getattr(model, "code_length_bits", None))) if size else None


@torch.no_grad()
def rate_distortion(model, x: Tensor, *, steps: Sequence[float] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6), reference: Tensor | None = None) -> list[RatePoint]:
    """Bits per image against reconstruction MSE (per dimension, data units) on x (N, *shape).

    Discrete codes (VQ-VAE, dVAE), one distortion (the reconstruction from x's codes) and three rates:
      "fixed-length": L log2 K for L code positions of K values (no entropy coding);
      "code entropy": L' bits from the per-position entropy of the codes' values (an ideal coder of
          independent positions, its frequencies from `reference`'s codes with add-one smoothing,
          or the plug-in entropy of x's own codes without one, which flatters the rate);
      "prior": -log2 p(k(x)) under the model's learned prior (VQ-VAE: the code length an arithmetic
          coder driven by its PixelCNN reaches).
    Continuous codes (AE, DAE, WAE, VAE means): z quantized to z^ = s round(z / s) for each step s in
      `steps` (in units of the codes' standard deviation per dimension, measured on x); the rate is
      the sum over dimensions of the entropy of z^'s values (as above, "quantized codes"), the
      distortion that of decode(z^).
    """
    name = getattr(model, "name", "") or type(model).__name__
    x = x.to(model.device)
    flat_x = x.reshape(x.shape[0], -1)
    discrete = _discrete_code_model(model)
    points: list[RatePoint] = []
    if discrete is not None:
        k, has_prior = discrete
        was_training = model.training
        model.eval()
        try:
            codes = torch.cat([model.encode_indices(c) for c in x.split(_CHUNK)]).reshape(x.shape[0], -1)
            ref_codes = None if reference is None else torch.cat([model.encode_indices(c.to(model.device)) for c in reference.split(_CHUNK)]).reshape(reference.shape[0], -1)
            recon = torch.cat([model.reconstruct(c) for c in x.split(_CHUNK)])
            mse = float((recon.reshape(x.shape[0], -1) - flat_x).pow(2).mean())
            setting = f"{codes.shape[1]} codes of {k}"
            points.append(RatePoint(f"{name} fixed-length", setting, codes.shape[1] * math.log2(k), mse))
            points.append(RatePoint(f"{name} code entropy", setting, float(_entropy_bits(codes, ref_codes).sum()), mse))
            if has_prior:
                bits = torch.cat([model.code_length_bits(c) for c in x.split(_CHUNK)])
                points.append(RatePoint(f"{name} prior", setting, float(bits.mean()), mse))
        finally:
            model.train(was_training)
        return points
    z_full = encode_latent(model, x)
    z = z_full.reshape(x.shape[0], -1)
    z_ref = None if reference is None else encode_latent(model, reference).reshape(reference.shape[0], -1)
    scale = z.std(0).clamp_min(1e-12)  # (D,)
    for s in steps:
        step = s * scale
        symbols = torch.round(z / step).long()
        ref_symbols = None if z_ref is None else torch.round(z_ref / step).long()
        bits = float(_entropy_bits(symbols, ref_symbols).sum())
        recon = decode_latent(model, (symbols * step).to(z.dtype).view(z_full.shape))
        mse = float((recon.reshape(x.shape[0], -1) - flat_x).pow(2).mean())
        points.append(RatePoint(f"{name} quantized codes", f"step {s:g} std", bits, mse))
    return points


# ---------------------------------------------------------------------------------------------
# All of it on a held-out split, written to a folder (`genlab latent`)
# ---------------------------------------------------------------------------------------------
LATENT_TOOLS = ("interpolate", "latent_map", "rate_distortion", "transfer_attribute")
# originals and their shifted decodings shown by the attribute-transfer picture
_TRANSFER_SHOWN = 8


def _write_json(obj: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
    return path


def write_latent_tools(
    model,
    data,
    out: str | os.PathLike,
    *,
    tools: Sequence[str] = ("interpolate", "latent_map", "rate_distortion"),
    split: str = "test",
    n: int | None = None,
    pairs: int = 8,
    steps: int = 8,
    method: str = "slerp",
    source: int | None = None,
    target: int | None = None,
    strength: float = 1.0,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Run latent `tools` of an encoder model on the first n samples (all by default) of `data`'s
    `split` (a `genlab.data.Dataset` with splits) and write into the folder `out`:

    "interpolate": `interpolate` between `pairs` pairs of samples drawn without replacement by
        `seed`, `steps` points each by `method`: interpolate.png (images: a row per pair, from the
        first sample's reconstruction to the second's) and interpolate.json (the pairs' indices in
        the split, the settings; for non-image data the decoded paths, (pairs, steps, *shape));
    "latent_map": `latent_map` with the split's labels: latent_map.png and latent_map.json (the
        share of variance on the two axes and each class's mean position);
    "rate_distortion": `rate_distortion` with the training split's codes as the entropy coder's
        reference: rate_distortion.png and rate_distortion.json (its points);
    "transfer_attribute": `transfer_attribute` from class `source` to `target` (means over the split)
        at `strength`: transfer_attribute.png (images: the first originals of class source above their
        shifted decodings) and transfer_attribute.json (settings, the number of codes shifted).

    Returns {tool: [paths written]}.
    """
    unknown = [t for t in tools if t not in LATENT_TOOLS]
    if unknown:
        raise ConfigError(f"unknown latent tool(s) {unknown}; choose from {', '.join(map(repr, LATENT_TOOLS))}")
    _check_encoder_model(model)
    x, labels = data.split(split).tensors()
    if n is not None:
        if n < 1:
            raise ConfigError(f"n={n} must be a positive number of samples")
        x, labels = x[:n], None if labels is None else labels[:n]
    spec = model.spec
    name = getattr(model, "name", "") or type(model).__name__
    out = Path(out)
    written: dict[str, list[Path]] = {}

    if "interpolate" in tools:
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise ConfigError(f"pairs={pairs!r} must be a positive number of interpolation pairs")
        if 2 * pairs > len(x):
            raise DataError(f"{pairs} interpolation pairs need {2 * pairs} samples; the {split} split gives {len(x)} (lower --pairs)")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: 2 * pairs]
        first, second = order[:pairs], order[pairs:]
        path = interpolate(model, x[first], x[second], steps=steps, method=method)  # (T, P, *shape)
        rows = path.transpose(0, 1).cpu()  # (P, T, *shape): a row per pair
        record: dict[str, Any] = {"method": method, "steps": steps, "split": split,
                                  "pairs": [[int(i), int(j)] for i, j in zip(first, second)]}
        files = []
        if spec.kind == "image":
            from genlab.viz.grid import save_image_grid

            files.append(save_image_grid(rows.reshape(-1, *spec.shape), out / "interpolate.png", nrow=rows.shape[1], value_range=spec.value_range))
        else:
            record["path"] = rows.tolist()
        files.append(_write_json(record, out / "interpolate.json"))
        written["interpolate"] = files

    if "latent_map" in tools:
        result = latent_map(model, x, labels, path=out / "latent_map.png")
        record = {"split": split, "n": len(x), "explained_variance": result.explained}
        if result.labels is not None:
            record["class_means"] = {
                int(c): result.coords[result.labels == c].mean(0).tolist() for c in torch.unique(result.labels)
            }
        written["latent_map"] = [out / "latent_map.png", _write_json(record, out / "latent_map.json")]

    if "rate_distortion" in tools:
        from genlab.viz.latent import plot_rate_distortion

        reference = data.split("train").tensors()[0] if "train" in data.split_names and split != "train" else None
        points = rate_distortion(model, x, reference=reference)
        written["rate_distortion"] = [
            plot_rate_distortion(points, out / "rate_distortion.png", title=f"{name}: rate vs distortion ({split} split)"),
            _write_json([dataclasses.asdict(p) for p in points], out / "rate_distortion.json"),
        ]

    if "transfer_attribute" in tools:
        if labels is None:
            raise DataError(f"transfer_attribute needs class labels; the {split} split of {spec.name!r} has none")
        if source is None or target is None:
            raise ConfigError("transfer_attribute needs a source and a target class (--transfer-attribute SOURCE TARGET)")
        present = sorted(set(labels.long().tolist()))
        for role, label in (("source", source), ("target", target)):
            if label not in present:
                raise ConfigError(f"{role} class {label} has no samples in the {split} split of {spec.name!r}; its classes are "
                                  f"{', '.join(map(str, present))}")
        shifted = transfer_attribute(model, x, labels, source, target, strength=strength).cpu()
        originals = x[labels.long() == source][:_TRANSFER_SHOWN]
        record = {"split": split, "source": source, "target": target, "strength": strength, "shifted": len(shifted)}
        files = []
        if spec.kind == "image" and len(originals):
            from genlab.viz.grid import save_image_grid

            grid = torch.cat([originals.cpu().to(shifted.dtype), shifted[:_TRANSFER_SHOWN]])
            files.append(save_image_grid(grid, out / "transfer_attribute.png", nrow=len(originals), value_range=spec.value_range))
        files.append(_write_json(record, out / "transfer_attribute.json"))
        written["transfer_attribute"] = files
    return written
