"""Classifier guidance: steer an unconditional diffusion model to a class with a noise-aware classifier.

Bayes' rule on the noised distribution p_t gives the score of the class-conditional one,

    grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x),

and since score = -eps / sigma(t), the denoiser of p_t(x | y) is

    eps_tilde(x_t, t) = eps_hat(x_t, t) - s * sigma(t) * grad_{x_t} log p_phi(y | x_t, t)

with s = 1 (Song et al. 2021, sec. 5 and appendix I; Dhariwal & Nichol 2021, alg. 2 writes the same
for DDIM). A scale s > 1 samples from p_t(x) p_t(y | x)^s / Z instead: sharper, more typical of the
class, less diverse (Dhariwal & Nichol 2021, sec. 4-5). Because it is only another eps_fn, every
sampler of `samplers.py` takes it unchanged.

p_phi(y | x_t, t) is a `NoisyClassifier` trained by `train_noisy_classifier` on x_t = alpha(t) x_0 +
sigma(t) eps at the diffusion model's own training times, in the model's normalised space (for a
latent diffusion model: its standardised latent space); or any callable log-probability, such as the
exact classifier of a Gaussian mixture, for tests.

    classifier = train_noisy_classifier(model, data, steps=2000)
    save_classifier(classifier, "runs/ddpm-8gaussians")        # -> runs/ddpm-8gaussians/classifier.safetensors
    result = guided_generate(model, classifier, 64, y=3, scale=2.0, generator=torch.Generator().manual_seed(0))
    result.x                                                    # (64, *shape) in the data's space

Classifier-free guidance (Ho & Salimans 2022), which needs no classifier, is `DiffusionModel.eps_fn`'s
`guidance_scale` on a model trained with `class_conditional=True`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.dataset import Dataset
from genlab.errors import ConfigError, DataError, RunError, RunNotFoundError
from genlab.models.diffusion.samplers import SampleResult
from genlab.models.diffusion.schedules import NoiseSchedule, expand_like
from genlab.nn.conv import ResidualBlock, conv_norm, level_widths, resolution_plan
from genlab.nn.distributions import sample_standard_normal
from genlab.nn.embeddings import NoiseLevelEmbedding
from genlab.nn.time_mlp import TimeConditionedMLP
from genlab.nn.unet import norm_groups

if TYPE_CHECKING:
    from genlab.models.diffusion.model import DiffusionModel

__all__ = [
    "CLASSIFIER_FILE",
    "NoisyClassifier",
    "train_noisy_classifier",
    "save_classifier",
    "load_classifier",
    "classifier_guided_eps_fn",
    "guided_generate",
]

CLASSIFIER_FILE = "classifier.safetensors"  # its name inside a run directory

EpsFn = Callable[[Tensor, Tensor], Tensor]
# (x_t (B, ...), t (B,)) -> (B, K) log p(k | x_t, t) for every class, or (B,) log p(y | x_t, t) for the wanted y
LogProbFn = Callable[[Tensor, Tensor], Tensor]


# ================================================================================================
# The classifier
# ================================================================================================
class NoisyClassifier(nn.Module):
    """p_phi(y | x_t, t): a classifier of noised samples x_t, told the noise level (Dhariwal & Nichol 2021, sec. 4).

    Vectors (shape (D,) or any shape that is not an image): a `TimeConditionedMLP` with a K-way head,
    the noise-level embedding added in every layer. Images (C, H, W): the encoder half of a UNet
    (stem conv; per level a time-conditioned `ResidualBlock`, then a stride-2 conv), then GroupNorm,
    SiLU, global average pooling and a linear K-way head (Dhariwal & Nichol pool with attention).

    forward(x (B, *shape), noise_level (B,)) -> logits (B, K). `log_prob(x_t, t, schedule)` feeds it
    x_t / sqrt(alpha(t)^2 + sigma(t)^2) (unit scale for unit-scale data under any schedule, as EDM's c_in)
    and schedule.noise_conditioning(t), the value the diffusion network's embedding gets.

    >>> net = NoisyClassifier(shape=(2,), num_classes=3, hidden=(16,))
    >>> net(torch.randn(5, 2), torch.rand(5) * 1000).shape
    torch.Size([5, 3])
    >>> NoisyClassifier(shape=(1, 8, 8), num_classes=10, channels=(8, 16))(torch.randn(2, 1, 8, 8), torch.rand(2)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        channels: Sequence[int] = (32, 64),
        embedding_dim: int = 128,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"NoisyClassifier num_classes={num_classes} must be >= 2 (a classifier needs two classes)")
        self.shape, self.num_classes = tuple(int(s) for s in shape), int(num_classes)
        # what `load_classifier` needs to rebuild it (kept in the safetensors metadata)
        self.architecture = {
            "shape": list(self.shape), "num_classes": self.num_classes, "hidden": [int(h) for h in hidden],
            "channels": [int(c) for c in channels], "embedding_dim": int(embedding_dim),
        }  # fmt: skip
        if len(self.shape) == 3:
            self.net: nn.Module = _ConvClassifier(self.shape, self.num_classes, channels=channels, embedding_dim=embedding_dim)
        else:
            mlp = TimeConditionedMLP(dim=math.prod(self.shape), hidden=tuple(hidden), embedding_dim=embedding_dim)
            mlp.out = nn.Linear(mlp.out.in_features, self.num_classes)  # a K-way head in place of the dim-way output
            self.net = mlp

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        if len(self.shape) != 3:
            x = x.reshape(x.shape[0], -1)  # (B, *shape) -> (B, D)
        return self.net(x, noise_level)  # (B, K)

    def log_prob(self, x_t: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
        """log p_phi(k | x_t, t) for every class k, (B, K); x_t: (B, *shape) in the normalised space, t: (B,)."""
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        c_in = torch.rsqrt(alpha**2 + sigma**2).to(device=x_t.device, dtype=x_t.dtype)
        x_in = (expand_like(c_in, x_t) * x_t).to(next(self.parameters()).dtype)  # differentiable cast
        logits = self(x_in, schedule.noise_conditioning(t).to(x_t.device))  # (B, K)
        return torch.log_softmax(logits, dim=-1)


class _ConvClassifier(nn.Module):
    """The UNet's down path with a pooled head: (B, C, H, W), noise level (B,) -> logits (B, K)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, *, channels: Sequence[int], embedding_dim: int) -> None:
        super().__init__()
        in_channels, height, width = shape
        plan = resolution_plan(height, width)
        widths = level_widths(channels, len(plan))
        self.noise_embedding = NoiseLevelEmbedding(widths[0], hidden=embedding_dim)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for level, (size, c) in enumerate(zip(plan, widths)):
            c_in = widths[max(level - 1, 0)]
            layers.append(ResidualBlock(c_in, out_channels=c, embedding_dim=embedding_dim, max_groups=norm_groups(min(c_in, c))))
            if level + 1 < len(plan):
                stride = tuple(1 if n == s else 2 for s, n in zip(size, plan[level + 1]))
                layers.append(nn.Conv2d(c, c, 3, stride=stride, padding=1))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Sequential(conv_norm(widths[-1], max_groups=norm_groups(widths[-1])), nn.SiLU())
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        e = self.noise_embedding(noise_level)  # (B,) -> (B, E)
        h = self.stem(x)  # (B, C, H, W) -> (B, c_0, H, W)
        for layer in self.layers:
            h = layer(h, e) if isinstance(layer, ResidualBlock) else layer(h)  # a stride-2 conv halves H, W
        return self.head(self.out(h).mean(dim=(2, 3)))  # (B, c_L, h, w) -> (B, c_L) -> (B, K)


# ================================================================================================
# Training, saving, loading
# ================================================================================================
def _labelled_tensors(data: Dataset | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, int | None]:
    if isinstance(data, Dataset):
        x, y = data.split("train").tensors()
        num_classes = data.spec.num_classes
        if y is None:
            raise DataError(f"dataset {data.spec.name!r} has no labels; a classifier needs labelled data (or pass (x, y) tensors)")
        return x, y, num_classes
    x, y = data
    if y is None or len(x) != len(y):
        raise DataError("pass data as a labelled genlab Dataset or as (x (N, ...), y (N,)) tensors of the same length")
    return x.float(), torch.as_tensor(y), None


@torch.no_grad()
def _normalized(model: "DiffusionModel", x: Tensor, chunk: int = 1024) -> Tensor:
    """model.normalize over the whole set in chunks (a latent model encodes here), on the model's device."""
    device = model.device
    return torch.cat([model.normalize(x[i : i + chunk].to(device)) for i in range(0, len(x), chunk)])


def train_noisy_classifier(
    model: "DiffusionModel",
    data: Dataset | tuple[Tensor, Tensor],
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    hidden: Sequence[int] = (256, 256),
    channels: Sequence[int] = (32, 64),
    embedding_dim: int = 128,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> NoisyClassifier:
    """Train p_phi(y | x_t, t) for `model`'s forward process by cross-entropy (Dhariwal & Nichol 2021, sec. 4):

        min_phi E_{(x_0, y), t, eps} [-log p_phi(y | x_t, t)],   x_t = alpha(t) x_0 + sigma(t) eps,

    x_0 = model.normalize(x) (the space the model samples in), t ~ model.schedule.training_times, eps ~ N(0, I),
    batches drawn with replacement. data: a labelled Dataset (its train split) or (x (N, *shape), y (N,)).

    A plain AdamW loop: the classifier is a helper of sampling, not a generative model, so it does not
    go through `genlab.fit`. Every draw (initial weights, batches, times, noise) comes from `generator`
    (default: seeded with `seed`); the tensors live on the model's device. Returns the classifier in eval mode.
    """
    x, y, num_classes = _labelled_tensors(data)
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"steps={steps}, batch_size={batch_size} and lr={lr} must be > 0")
    num_classes = num_classes or int(y.max()) + 1
    device, schedule = model.device, model.schedule
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    x0 = _normalized(model, x)  # (N, *shape of the diffusion space)
    y = y.long().to(device)
    with torch.random.fork_rng(devices=[]):  # the initial weights from the generator, not the global RNG
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))
        classifier = NoisyClassifier(shape=x0.shape[1:], num_classes=num_classes, hidden=hidden, channels=channels, embedding_dim=embedding_dim)
    classifier.to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    from tqdm.auto import tqdm

    bar = tqdm(range(steps), disable=not progress, unit="step", desc="noisy classifier")
    classifier.train()
    for step in bar:
        index = torch.randint(len(x0), (batch_size,), generator=generator, device=generator.device).to(device)
        t = schedule.training_times(batch_size, generator=generator, device=device)
        noise = sample_standard_normal((batch_size, *x0.shape[1:]), generator=generator, device=device, dtype=x0.dtype)
        x_t = schedule.q_sample(x0[index], t, noise)
        loss = F.nll_loss(classifier.log_prob(x_t, t, schedule), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return classifier.eval()


def _classifier_path(path: str | Path) -> Path:
    path = Path(path)
    return path / CLASSIFIER_FILE if path.is_dir() or not path.suffix else path


def save_classifier(classifier: NoisyClassifier, path: str | Path) -> Path:
    """Write the classifier's weights and architecture to a safetensors file; a run directory (or a path
    without a suffix) gets `classifier.safetensors` inside it. Returns the file's path."""
    from genlab.weights import save_weights

    path = _classifier_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(classifier, path, metadata={"genlab": "noisy-classifier", "architecture": json.dumps(classifier.architecture)})
    return path


def load_classifier(path: str | Path, *, device: torch.device | str | None = None) -> NoisyClassifier:
    """The classifier saved by `save_classifier` at `path` (a file, or a run directory holding
    classifier.safetensors), in eval mode."""
    from genlab.weights import load_weights, read_metadata

    path = _classifier_path(path)
    if not path.is_file():
        raise RunNotFoundError(
            f"no classifier at '{path}'; train one with train_noisy_classifier(model, data) and save it with save_classifier(classifier, run_dir)"
        )
    metadata = read_metadata(path)
    if metadata.get("genlab") != "noisy-classifier":
        raise RunError(f"'{path}' is not a noisy classifier saved by genlab (save_classifier writes one)")
    try:
        classifier = NoisyClassifier(**json.loads(metadata["architecture"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"'{path}' has a damaged classifier architecture ({exc}); save it again with save_classifier") from None
    load_weights(classifier, path, device=device)
    return classifier.to(device).eval() if device is not None else classifier.eval()


# ================================================================================================
# Guided sampling
# ================================================================================================
def _as_labels(y: Tensor | int | Sequence[int], device: torch.device, num_classes: int | None) -> Tensor:
    y = torch.as_tensor(y, device=device).long().reshape(-1)
    if y.numel() == 0 or y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        raise ConfigError(f"labels y must lie in [0, {num_classes - 1 if num_classes else 'K - 1'}], got {y.tolist()[:8]}")
    return y


def _log_prob_fn(model: "DiffusionModel", classifier: NoisyClassifier | LogProbFn) -> tuple[LogProbFn, int | None]:
    if isinstance(classifier, NoisyClassifier):
        classifier.eval()
        return (lambda x_t, t: classifier.log_prob(x_t, t, model.schedule)), classifier.num_classes
    if not callable(classifier):
        raise ConfigError(f"classifier must be a NoisyClassifier or a callable (x_t, t) -> log p(y | x_t, t), got {type(classifier).__name__}")
    return classifier, None


def classifier_guided_eps_fn(
    model: "DiffusionModel",
    classifier: NoisyClassifier | LogProbFn,
    y: Tensor | int | Sequence[int] | None,
    scale: float = 1.0,
    *,
    cond: Tensor | None = None,
) -> EpsFn:
    """The denoiser of p_t(x) p_t(y | x)^s: eps_tilde = eps_hat - s sigma(t) grad_{x_t} log p_phi(y | x_t, t).

    model: the diffusion model whose eps_hat is steered (its unconditional prediction; a class-conditional
        model gets `cond` as its own labels, so guidance adds to the conditional model, as Dhariwal & Nichol do).
    classifier: a `NoisyClassifier` trained for this model, or a callable log_prob_fn(x_t (B, ...), t (B,))
        returning log p(k | x_t, t) for every class, (B, K), of which `y` picks one per row, or already
        log p(y | x_t, t), (B,) (then y is unused and may be None).
    y: the wanted labels, an int or (B,). scale: s >= 0 (1: the exact conditional for an exact classifier).
    Returns eps_fn(x_t (B, ...), t (B,)) -> (B, ...), for any sampler; the gradient is taken per sample by
    autograd even though samplers run under torch.no_grad().
    """
    if scale < 0:
        raise ConfigError(f"classifier guidance scale={scale} must be >= 0 (0: no guidance, 1: the exact conditional)")
    log_prob_fn, num_classes = _log_prob_fn(model, classifier)
    labels = None if y is None else _as_labels(y, model.device, num_classes)
    base = model.eps_fn(cond)

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            eps = base(x_t, t)
        if scale == 0:
            return eps
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            log_probs = log_prob_fn(x, t)
            if log_probs.dim() == 2:
                if labels is None:
                    raise ConfigError("the classifier returns log p(k | x_t) for every class (B, K); pass the wanted labels y")
                log_probs = log_probs.gather(1, labels.expand(x.shape[0]).unsqueeze(1)).squeeze(1)  # (B, K) -> (B,)
            # rows are independent, so the gradient of the sum is each row's own gradient
            (gradient,) = torch.autograd.grad(log_probs.sum(), x)  # (B, ...)
        sigma = model.schedule.sigma(t).to(device=x_t.device, dtype=x_t.dtype)
        return eps - scale * expand_like(sigma, x_t) * gradient.to(x_t.dtype)

    return guided


@torch.no_grad()
def guided_generate(
    model: "DiffusionModel",
    classifier: NoisyClassifier | LogProbFn,
    n: int,
    y: Tensor | int | Sequence[int] | None,
    *,
    scale: float = 1.0,
    cond: Tensor | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> SampleResult:
    """n classifier-guided samples of class y (an int, or (n,) labels) with guidance scale `scale`.

    Draws with `model.generate(n, eps_fn=classifier_guided_eps_fn(model, classifier, y, scale), ...)`, the
    machinery of model.generate, and returns SampleResult(x, nfe, trajectory) with x (n, *spec.shape)
    mapped to the data's space by model.to_data_space (images quantized; a latent model decodes);
    the trajectory, when asked for, stays in the normalised space. nfe counts guided denoiser calls,
    each one network and one classifier forward and backward pass.

    >>> from genlab.data import DataSpec
    >>> from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel
    >>> spec = DataSpec("toy", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
    >>> model = DiffusionModel(DiffusionConfig(hidden=(16,), steps=10), spec)
    >>> classifier = NoisyClassifier(shape=(2,), num_classes=2, hidden=(16,))
    >>> result = guided_generate(model, classifier, 3, y=1, scale=2.0, steps=5, generator=torch.Generator().manual_seed(0))
    >>> result.x.shape, result.nfe
    (torch.Size([3, 2]), 5)
    """
    labels = None
    if y is not None:
        labels = _as_labels(y, model.device, classifier.num_classes if isinstance(classifier, NoisyClassifier) else None)
        if labels.numel() not in (1, n):
            raise ConfigError(f"y must be one label or {n} labels (one per sample), got {labels.numel()}")
    if cond is not None:
        cond = model.check_labels(cond, n, model.num_classes)
    eps_fn = classifier_guided_eps_fn(model, classifier, labels, scale, cond=cond)
    result = model.generate(n, generator=generator, sampler=sampler, steps=steps, eps_fn=eps_fn, **options)
    return SampleResult(model.to_data_space(result.x), result.nfe, result.trajectory)
