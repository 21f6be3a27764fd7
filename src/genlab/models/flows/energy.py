"""Fitting a flow to an unnormalised density by reverse KL, and to samples by forward KL.

The four 2D energies of Rezende & Mohamed 2015 ("Variational Inference with Normalizing Flows",
Table 1), p(z) = exp(-U(z)) / Z, with

    w1(z) = sin(2 pi z1 / 4),   w2(z) = 3 exp(-((z1 - 1) / 0.6)^2 / 2),   w3(z) = 3 sigmoid((z1 - 1) / 0.3)
    U1(z) = ((||z|| - 2) / 0.4)^2 / 2 - ln[exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2)]
    U2(z) = ((z2 - w1(z)) / 0.4)^2 / 2
    U3(z) = -ln[exp(-((z2 - w1(z)) / 0.35)^2 / 2) + exp(-((z2 - w1(z) + w2(z)) / 0.35)^2 / 2)]
    U4(z) = -ln[exp(-((z2 - w1(z)) / 0.4)^2 / 2) + exp(-((z2 - w1(z) + w3(z)) / 0.35)^2 / 2)]

U2-U4 do not depend on z1 far from the origin, so exp(-U) is not integrable over the plane; the
paper draws them on [-4, 4]^2. `energy` therefore adds a soft wall ((|z1| - 4)_+ / 0.1)^2 / 2 by
default (wall=None gives the paper's formulas alone); U1's mass beyond |z1| = 4 is negligible.

Reverse KL (the variational-inference objective; the flow's samples are reparameterised):

    KL(q || p) = E_{x ~ q}[log q(x) - log p~(x)] + log Z >= 0,   p~ = exp(-U) = Z p

needs only samples of q with their log-density and the unnormalised target: `fit_reverse_kl`.
Minimising it is *mode seeking*: q is punished wherever it puts mass that p lacks, not where it
misses mass of p. Forward KL, KL(p || q) = E_p[log p - log q], is maximum likelihood on samples of
p (`fit_forward_kl`): *mode covering*, q is punished wherever it misses p's mass. With a flow too
weak to fit p, the two give visibly different answers: `plot_kl_comparison` draws them side by side.

Plotting lives here (a small matplotlib function, drawn on an Agg canvas without pyplot), not in
`genlab.viz`, because models must not import the viz layer above them. Reverse-KL fitting is not
exposed by the CLI (it has no dataset); `examples/reverse_kl.py` writes the figures:

>>> import torch, genlab
>>> from genlab.models.flows.energy import energy_spec, energy, fit_reverse_kl
>>> flow = genlab.create("nsf", data=energy_spec(), transforms=2, hidden=(16,))
>>> history = fit_reverse_kl(flow, lambda z: -energy("U1", z), steps=5, batch=64,
...                          generator=torch.Generator().manual_seed(0))
>>> len(history)
5
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError

LogDensity = Callable[[Tensor], Tensor]
ENERGY_NAMES = ("U1", "U2", "U3", "U4")
# the paper's plots show [-4, 4]^2; the wall sits at its sides
DEFAULT_WALL = 4.0
_WALL_WIDTH = 0.1


# -- the energies of Rezende & Mohamed (2015), Table 1 ------------------------------------------------
def _w1(z: Tensor) -> Tensor:
    return torch.sin(2.0 * math.pi * z[:, 0] / 4.0)


def _w2(z: Tensor) -> Tensor:
    return 3.0 * torch.exp(-0.5 * ((z[:, 0] - 1.0) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3.0 * torch.sigmoid((z[:, 0] - 1.0) / 0.3)


def _neg_log_two_bumps(a: Tensor, b: Tensor) -> Tensor:
    """-ln[exp(-a^2 / 2) + exp(-b^2 / 2)], computed by logsumexp (stable far from both bumps)."""
    return -torch.logsumexp(torch.stack([-0.5 * a**2, -0.5 * b**2]), dim=0)


def energy(name: str, z: Tensor, *, wall: float | None = DEFAULT_WALL) -> Tensor:
    """U(z) of Rezende & Mohamed 2015, Table 1, for name in U1..U4; z (B, 2) -> (B,).

    wall: add ((|z1| - wall)_+ / 0.1)^2 / 2, so that exp(-U) is integrable (see the module
    docstring); None for the paper's formulas alone.
    """
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"the energies take points of shape (B, 2), got {tuple(z.shape)}")
    z1, z2 = z[:, 0], z[:, 1]
    if name == "U1":
        radius = z.norm(dim=1)
        u = 0.5 * ((radius - 2.0) / 0.4) ** 2 + _neg_log_two_bumps((z1 - 2.0) / 0.6, (z1 + 2.0) / 0.6)
    elif name == "U2":
        u = 0.5 * ((z2 - _w1(z)) / 0.4) ** 2
    elif name == "U3":
        u = _neg_log_two_bumps((z2 - _w1(z)) / 0.35, (z2 - _w1(z) + _w2(z)) / 0.35)
    elif name == "U4":
        u = _neg_log_two_bumps((z2 - _w1(z)) / 0.4, (z2 - _w1(z) + _w3(z)) / 0.35)
    else:
        raise ConfigError(f"unknown energy {name!r}; choose one of {', '.join(ENERGY_NAMES)}")
    if wall is not None:
        u = u + 0.5 * (torch.relu(z1.abs() - wall) / _WALL_WIDTH) ** 2
    return u


def energy_spec(name: str = "energy") -> DataSpec:
    """A DataSpec for a flow on the whole plane R^2 (no value range to clamp samples to), to build
    a flow with `genlab.create(..., data=energy_spec())`."""
    return DataSpec(name, kind="vector", shape=(2,), value_range=(-math.inf, math.inf))


def grid_log_normalizer(log_density: LogDensity, bound: float = 6.0, resolution: int = 801) -> float:
    """log Z = log of the integral of exp(log_density) over [-bound, bound]^2, by the trapezoid rule
    on a resolution^2 grid in float64 (for the energies above: accurate to ~1e-4 at the defaults)."""
    axis = torch.linspace(-bound, bound, resolution, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    with torch.no_grad():
        values = log_density(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).reshape(resolution, resolution)
    weights = torch.ones(resolution, dtype=torch.float64)
    weights[0] = weights[-1] = 0.5
    step = (2 * bound / (resolution - 1)) ** 2
    log_w = torch.log(weights[:, None] * weights[None, :] * step)
    return float(torch.logsumexp((values.to(torch.float64) + log_w).reshape(-1), 0))


# -- samples with their log-density, differentiable ----------------------------------------------------
def sample_with_log_prob(flow, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """x ~ q and log q(x), both differentiable in the flow's parameters (reparameterised), for a
    FlowModel of vectors: z ~ N(0, I), u = f^{-1}(z), x = postprocess(u), and

        log q(x) = log N(z; 0, I) - log|det df^{-1}/dz| - log|det dx/du|   (the last of the preprocessing).

    Returns x (n, *shape) and log q(x) (n,). No quantization or clamping: x is the flow's own draw.
    """
    z = flow.base_sample((n, *flow.latent_shape), generator)
    u, inverse_log_det = flow.transform.inverse(z)
    # not `postprocess`, which clamps to the data's value range: a clamped sample has no density
    # (reverse-KL training learns to pile samples onto the clamp, where log q is wrong)
    x, postprocess_log_det = flow.preprocessing.inverse(u)
    return x, flow.base_log_prob(z) - inverse_log_det - postprocess_log_det


def fit_reverse_kl(
    flow,
    log_target: LogDensity,
    steps: int,
    batch: int,
    generator: torch.Generator | None = None,
    *,
    lr: float = 1e-3,
    log_normalizer: float = 0.0,
) -> list[float]:
    """Minimise KL(q || p) = E_q[log q(x) - log p~(x)] + log Z over the flow q by Adam, with `batch`
    reparameterised samples per step; log_target(x) = log p~(x), (B, 2) -> (B,), unnormalised.

    Returns the KL estimate of every step (pass log_normalizer = log Z, when known, to make the
    numbers KLs; otherwise they are KL - log Z, the negative ELBO). The flow is left in eval mode.
    """
    def objective() -> Tensor:
        x, log_q = sample_with_log_prob(flow, batch, generator=generator)
        return (log_q - log_target(x)).mean() + log_normalizer

    return _adam_fit(flow, objective, steps, batch, lr, "fit_reverse_kl")


def fit_forward_kl(
    flow,
    sample_target: Callable[[int, torch.Generator | None], Tensor],
    steps: int,
    batch: int,
    generator: torch.Generator | None = None,
    *,
    lr: float = 1e-3,
) -> list[float]:
    """Minimise KL(p || q) = E_p[log p(x)] - E_p[log q(x)], i.e. maximum likelihood on fresh draws
    x ~ p each step (sample_target(n, generator) -> (n, 2)); returns the NLL -E_p[log q] per step.
    The flow is left in eval mode."""
    def objective() -> Tensor:
        x = sample_target(batch, generator).to(next(flow.parameters()).dtype)
        return -flow.log_prob(x).mean()

    return _adam_fit(flow, objective, steps, batch, lr, "fit_forward_kl")


def _adam_fit(flow, objective: Callable[[], Tensor], steps: int, batch: int, lr: float, name: str) -> list[float]:
    """`steps` Adam steps on objective() (a fresh batch each call); the objective of every step. The
    flow is left in eval mode. (A plain loop of its own, not genlab.fit: the target is a function,
    not a dataset.)"""
    if steps < 1 or batch < 1:
        raise ConfigError(f"{name} needs steps >= 1 and batch >= 1, got steps={steps}, batch={batch}")
    flow.train()
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss = objective()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    flow.eval()
    return history


# -- a target with samples, for the forward/reverse contrast -----------------------------------------------
class GaussianMixture2D:
    """An equal-weight mixture of isotropic 2D Gaussians: log_prob (normalised) and sample, so that
    both KLs can be fitted and measured. centers (K, 2); std the components' standard deviation."""

    def __init__(self, centers: Tensor, std: float) -> None:
        self.centers = torch.as_tensor(centers, dtype=torch.float64)
        self.std = float(std)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_k log N(x; c_k, std^2 I) - log K, (B, 2) -> (B,)."""
        c = self.centers.to(x)
        sq = (x[:, None, :] - c[None]).pow(2).sum(-1)  # (B, K)
        log_normal = -0.5 * sq / self.std**2 - math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(log_normal, 1) - math.log(len(c))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.randint(len(self.centers), (n,), generator=generator)
        return self.centers[k] + self.std * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def plot_kl_comparison(
    log_target: LogDensity,
    fitted: Mapping[str, object],
    path: str | os.PathLike,
    *,
    bound: float = 4.0,
    resolution: int = 200,
    title: str | None = None,
) -> Path:
    """Save a row of density panels as a PNG: the target exp(log_target) (normalised on the grid),
    then exp(log q) of each fitted flow in `fitted` (title -> FlowModel, e.g. {"forward KL": ...,
    "reverse KL": ...}), on [-bound, bound]^2. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    axis = torch.linspace(-bound, bound, resolution, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    panels = [("target", log_target)] + [(name, _flow_log_prob(flow)) for name, flow in fitted.items()]
    fig = Figure(figsize=(3.6 * len(panels), 3.6))
    FigureCanvasAgg(fig)
    for ax, (name, fn) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        with torch.no_grad():
            log_p = torch.cat([fn(chunk) for chunk in points.split(16384)]).to(torch.float64)
        density = torch.exp(log_p - log_p.max()).reshape(resolution, resolution).numpy()
        ax.imshow(density, origin="lower", extent=(-bound, bound, -bound, bound), cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def _flow_log_prob(flow) -> LogDensity:
    def log_prob(x: Tensor) -> Tensor:
        dtype = next(flow.parameters()).dtype
        return flow.log_prob(x.to(dtype))

    return log_prob
