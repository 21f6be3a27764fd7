"""FFJORD: a continuous normalizing flow (Chen et al. 2018; Grathwohl et al. 2019) for vectors and images.

The flow is the solution map of an ODE. For data x (after the flow's preprocessing), z(0) = x and

    dz/dt = f(z(t), t),      z = z(T)                                       (Chen et al. 2018, eq. 1)
    d log p(z(t)) / dt = -tr(df/dz(t))      (instantaneous change of variables, Chen et al. thm. 1)

so that  log p(x) = log N(z(T); 0, I) + int_0^T tr(df/dz(t)) dt.

The solver integrates the augmented state (z, a) with da/dt = tr(df/dz) from 0 to T (`torchdiffeq`),
and a(T) = log|det dz(T)/dx| is the bijection's log-det; sampling draws z(T) ~ N(0, I) and integrates
back to t = 0. The trace is exact for small D (one vector-Jacobian product per dimension) or
Hutchinson's estimate v^T (df/dz) v with one probe v per solve, which FFJORD introduced
(`genlab.nn.divergence`). Gradients flow through the solver's operations, or with adjoint=True
through the adjoint ODE of Chen et al. (2018, sec. 2), whose memory does not grow with the steps.

Training minimises the NLL plus, optionally, the regularisers of Finlay et al. (2020, "How to train
your neural ODE"), integrated along the same solve:

    kinetic energy  int_0^T ||f(z(t), t)||^2 dt,      Jacobian  int_0^T ||df/dz(t)||_F^2 dt,

which favour straight, smooth trajectories that the adaptive solver crosses in few steps.
The number of function evaluations of the last solve is logged as the loss term `nfe`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
from torch import Tensor, nn

from genlab.data.dataset import Batch, DataSpec
from genlab.data.transforms import quantize
from genlab.errors import ConfigError
from genlab.models.base import Loss
from genlab.models.flows.base import Bijection, FlowConfig, FlowModel
from genlab.nn.conv import ResidualBlock
from genlab.nn.divergence import PROBE_KINDS, divergence, divergence_and_frobenius, sample_probe
from genlab.nn.embeddings import NoiseLevelEmbedding
from genlab.nn.time_mlp import TimeConditionedMLP
from genlab.registry import register

ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
FIXED_STEP_SOLVERS = ("euler", "midpoint", "rk4")
TRACES = ("auto", "exact", "hutchinson")
# trace="auto" computes the exact trace up to this many dimensions (D vector-Jacobian products per
# evaluation against one for Hutchinson's estimate, whose variance grows with D)
EXACT_TRACE_MAX_DIM = 4
# log_prob draws its Hutchinson probes from a generator seeded with this when none is given, so the
# same x gives the same number (as `FlowModel.log_prob` does for the dequantization noise)
_LOG_PROB_SEED = 0


# -- the vector fields f(z, t) -------------------------------------------------------------------------


class MLPVectorField(nn.Module):
    """f(z, t) for vectors: `TimeConditionedMLP` (z (B, D), t) -> (B, D), t a 0-dim time.

    The time is embedded once per evaluation and broadcast over the batch (every sample shares t in
    an ODE solve). The output layer starts at zero, so the flow starts as the identity map.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...], *, embedding_dim: int = 64) -> None:
        super().__init__()
        self.net = TimeConditionedMLP(dim=dim, hidden=hidden, embedding_dim=embedding_dim)
        nn.init.zeros_(self.net.out.weight)
        nn.init.zeros_(self.net.out.bias)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        return self.net(z, t.reshape(1).to(z.dtype))  # (B, D) -> (B, D)


class ConvVectorField(nn.Module):
    """f(z, t) for images: (B, C, H, W) -> (B, C, H, W), t a 0-dim time.

    3x3 conv to `channels` -> `blocks` residual blocks (`genlab.nn.ResidualBlock` without
    normalisation, the time embedding added after their first convolution) -> SiLU -> 3x3 conv to C,
    started at zero (the identity flow). Convolutions keep every sample's field its own, which the
    divergence requires (no batch statistics).
    """

    def __init__(self, in_channels: int, *, channels: int = 32, blocks: int = 2, embedding_dim: int = 64) -> None:
        super().__init__()
        self.time_embedding = NoiseLevelEmbedding(embedding_dim // 2, hidden=embedding_dim)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            [ResidualBlock(channels, norm="none", embedding_dim=embedding_dim) for _ in range(blocks)]
        )
        self.activation = nn.SiLU()
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        e = self.time_embedding(t.reshape(1).to(z.dtype))  # () -> (1, E), broadcast over the batch
        h = self.conv_in(z)  # (B, C, H, W) -> (B, channels, H, W)
        for block in self.blocks:
            h = block(h, e)
        return self.conv_out(self.activation(h))  # (B, channels, H, W) -> (B, C, H, W)


# -- the continuous flow as a bijection ------------------------------------------------------------------


@dataclasses.dataclass
class SolveStats:
    """What the last solve of a `ContinuousFlow` measured: nfe, the number of evaluations of f;
    kinetic_energy and jacobian_frobenius (B,), the integrals of ||f||^2 and ||df/dz||_F^2 along the
    trajectories, when the solve was asked to regularise (else None)."""

    nfe: int = 0
    kinetic_energy: Tensor | None = None
    jacobian_frobenius: Tensor | None = None


class _AugmentedDynamics(nn.Module):
    """d/dt (z, a[, E, F]) = (f(z, t), tr(df/dz)[, ||f||^2, ||df/dz||_F^2]) for torchdiffeq."""

    def __init__(self, field: nn.Module, *, trace: str, noise: Tensor | None, regularize: bool) -> None:
        super().__init__()
        self.field = field
        self.trace = trace
        self.noise = noise
        self.regularize = regularize
        self.nfe = 0

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        z = state[0]
        # differentiable results only where the caller differentiates: the direct method's training
        # solve and the adjoint's backward pass; else (no_grad evaluation, the adjoint's forward pass)
        # detached values
        differentiable = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (differentiable and z.requires_grad):
                # a fresh leaf: the adjoint's forward pass hands in views of a tensor that requires
                # grad but were taken under no_grad, which autograd cannot differentiate through
                z = z.detach().requires_grad_(True)
            f = self.field(z, t)
            if self.regularize:
                div, frobenius = divergence_and_frobenius(f, z, method=self.trace, noise=self.noise, create_graph=differentiable)
            else:
                div = divergence(f, z, method=self.trace, noise=self.noise, create_graph=differentiable)
        derivatives: tuple[Tensor, ...] = (f, div)
        if self.regularize:
            derivatives = derivatives + (f.reshape(f.shape[0], -1).pow(2).sum(1), frobenius)
        if not differentiable:
            derivatives = tuple(d.detach() for d in derivatives)
        return derivatives


class _StateOnly(nn.Module):
    """dz/dt = f(z, t) alone: sampling needs the trajectory, not its log-density."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.field(z, t)


class ContinuousFlow(Bijection):
    """The time-T map of dz/dt = f(z, t) as a bijection x = z(0) -> z(T), with
    log|det dz(T)/dx| = int_0^T tr(df/dz(t)) dt (Chen et al. 2018, thm. 1). Any (B, ...) shape.

    field: a module f(z (B, ...), t 0-dim tensor) -> (B, ...), each sample's field depending on that
        sample alone. Replace it to change the dynamics (e.g. a linear field in tests).
    trace: "exact" or "hutchinson" (one probe of kind `probe` per solve, from `probes_from`'s
        generator or the default one).
    solver, step_size: a torchdiffeq method; fixed-step methods need step_size.
    rtol, atol: the adaptive solver's tolerances in training mode; eval_rtol, eval_atol in eval mode.
    adjoint: gradients by the adjoint ODE (`torchdiffeq.odeint_adjoint`) instead of backpropagation
        through the solver's steps.
    regularize: also integrate the kinetic energy and the Jacobian's squared Frobenius norm
        (Finlay et al. 2020) in differentiable solves of the forward direction, into `last_solve`.
    `last_solve` (`SolveStats`) holds the last solve's number of evaluations and those integrals.
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        time_length: float = 1.0,
        trace: str = "exact",
        probe: str = "rademacher",
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        eval_rtol: float | None = None,
        eval_atol: float | None = None,
        step_size: float | None = None,
        adjoint: bool = False,
        regularize: bool = False,
    ) -> None:
        super().__init__()
        if trace not in ("exact", "hutchinson"):
            raise ConfigError(f"ContinuousFlow trace={trace!r} is unknown; choose 'exact' or 'hutchinson'")
        if probe not in PROBE_KINDS:
            raise ConfigError(f"ContinuousFlow probe={probe!r} is unknown; choose one of {', '.join(map(repr, PROBE_KINDS))}")
        if solver not in ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS:
            raise ConfigError(f"solver={solver!r} is unknown; choose one of {', '.join(ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS)}")
        if solver in FIXED_STEP_SOLVERS and step_size is None:
            raise ConfigError(f"the fixed-step solver {solver!r} needs step_size (e.g. 0.1), or choose an adaptive one like 'dopri5'")
        self.field = field
        self.time_length = float(time_length)
        self.trace, self.probe = trace, probe
        self.solver, self.step_size, self.adjoint = solver, step_size, adjoint
        self.rtol, self.atol = rtol, atol
        self.eval_rtol = rtol if eval_rtol is None else eval_rtol
        self.eval_atol = atol if eval_atol is None else eval_atol
        self.regularize = regularize
        self.last_solve = SolveStats()
        self._probe_generator: torch.Generator | None = None

    @contextlib.contextmanager
    def probes_from(self, generator: torch.Generator | None) -> Iterator[None]:
        """Within the block, Hutchinson probes are drawn from `generator` (None: the default one)."""
        previous, self._probe_generator = self._probe_generator, generator
        try:
            yield
        finally:
            self._probe_generator = previous

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z = z(T) from z(0) = x (B, ...), and log|det dz/dx| = int_0^T tr(df/dz) dt, (B,)."""
        return self._solve(x, 0.0, self.time_length, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x = z(0) from z(T) = z (B, ...), and log|det dx/dz| = -int_0^T tr(df/dz) dt, (B,)."""
        return self._solve(z, self.time_length, 0.0, context)

    def integrate(self, z: Tensor, t_start: float, t_end: float) -> Tensor:
        """z(t_end) from z(t_start) = z (B, ...), without the log-density (for sampling)."""
        dynamics = _StateOnly(self.field)
        trajectory = self._odeint(dynamics, z, self._times(z, t_start, t_end))
        self.last_solve = SolveStats(nfe=dynamics.nfe)
        return trajectory[-1]

    def _solve(self, x: Tensor, t_start: float, t_end: float, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if context is not None:
            raise ConfigError("FFJORD's vector field is unconditional; it takes no context (class_conditional=false)")
        noise = None
        if self.trace == "hutchinson":
            noise = sample_probe(x.shape, kind=self.probe, generator=self._probe_generator, device=x.device, dtype=x.dtype)
        regularize = self.regularize and torch.is_grad_enabled() and t_end > t_start
        dynamics = _AugmentedDynamics(self.field, trace=self.trace, noise=noise, regularize=regularize)
        zeros = x.new_zeros(x.shape[0])
        state = (x, zeros) + ((zeros, zeros) if regularize else ())
        solution = self._odeint(dynamics, state, self._times(x, t_start, t_end))
        z, log_det = solution[0][-1], solution[1][-1]
        self.last_solve = SolveStats(
            nfe=dynamics.nfe,
            kinetic_energy=solution[2][-1] if regularize else None,
            jacobian_frobenius=solution[3][-1] if regularize else None,
        )
        return z, log_det

    def _times(self, x: Tensor, t_start: float, t_end: float) -> Tensor:
        return torch.tensor([t_start, t_end], dtype=x.dtype, device=x.device)

    def _odeint(self, dynamics: nn.Module, state, times: Tensor):
        import torchdiffeq

        rtol, atol = (self.rtol, self.atol) if self.training else (self.eval_rtol, self.eval_atol)
        kwargs = dict(rtol=rtol, atol=atol, method=self.solver)
        if self.solver in FIXED_STEP_SOLVERS:
            kwargs["options"] = {"step_size": self.step_size}
        if self.adjoint and torch.is_grad_enabled():
            return torchdiffeq.odeint_adjoint(dynamics, state, times, adjoint_params=tuple(self.field.parameters()), **kwargs)
        return torchdiffeq.odeint(dynamics, state, times, **kwargs)


# -- the model -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FFJORDConfig(FlowConfig):
    """Configuration of FFJORD (with the preprocessing and dequantization fields of `FlowConfig`).

    hidden: vectors: widths of the time-conditioned MLP f(z, t) (`genlab.nn.TimeConditionedMLP`).
    channels, blocks: images: width and number of residual blocks of the convolutional f(z, t). Small
        by default because every step integrates an ODE: on digits (8x8) one training step of batch
        128 costs about 0.7 s of one CPU core at 30 evaluations per solve (measured).
    time_length: T, the integration time of the flow.
    trace: tr(df/dz) by "exact" (D vector-Jacobian products per evaluation), "hutchinson" (one, with
        one probe per solve: an unbiased estimate of log p), or "auto": exact for D <= 4, else Hutchinson.
    probe: the Hutchinson probe, "rademacher" or "gaussian".
    solver: a torchdiffeq method: adaptive "dopri5" (FFJORD's), "dopri8", "bosh3", "adaptive_heun",
        or fixed-step "euler", "midpoint", "rk4" with `step_size`.
    rtol, atol: the adaptive solver's tolerances in training. Loose, for speed: on 8gaussians the
        solves took about 40 evaluations at 1e-3 against about 70 at 1e-5 (measured after 300-600 steps),
        and the test NLL, computed at eval_rtol / eval_atol, was 0.04 nats above the entropy.
    eval_rtol, eval_atol: the tolerances in eval mode (log_prob, sampling, `genlab eval`), where the
        numbers are reported (FFJORD's test_atol / test_rtol).
    step_size: the step of a fixed-step solver.
    adjoint: gradients by the adjoint method (Chen et al. 2018): memory independent of the number
        of steps, at the price of a second solve, backwards in time, for the gradients.
    kinetic_energy, jacobian_frobenius: weights of the regularisers of Finlay et al. (2020) in the
        training loss (0 switches one off). Measured with 0.01 each against 0: on digits (300 steps)
        about 31 evaluations per training solve instead of 38 and 2.39 bits/dim instead of 2.44; on
        8gaussians (1,000 steps) no gain: 42 evaluations instead of 34, test NLL 2.868 against 2.870.
    """

    hidden: tuple[int, ...] = (64, 64, 64)
    channels: int = 16
    blocks: int = 1
    time_length: float = 1.0
    trace: str = "auto"
    probe: str = "rademacher"
    solver: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    eval_rtol: float = 1e-5
    eval_atol: float = 1e-5
    step_size: float | None = None
    adjoint: bool = False
    kinetic_energy: float = 0.01
    jacobian_frobenius: float = 0.01

    def validate(self) -> None:
        super().validate()
        widths = tuple(self.hidden)
        if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ConfigError(f"FFJORDConfig.hidden={widths!r} must be a non-empty list of positive widths, e.g. (64, 64, 64)")
        self.hidden = widths
        self._positive("channels", "blocks", "time_length", "rtol", "atol", "eval_rtol", "eval_atol")
        self._positive("kinetic_energy", "jacobian_frobenius", allow_zero=True)
        self._choice("trace", TRACES)
        self._choice("probe", PROBE_KINDS)
        self._choice("solver", ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS)
        if self.solver in FIXED_STEP_SOLVERS:
            if self.step_size is None:
                raise ConfigError(f"FFJORDConfig.solver={self.solver!r} is a fixed-step solver: set step_size (e.g. 0.05) or use solver='dopri5'")
        if self.step_size is not None:
            self._positive("step_size")
        if self.class_conditional:
            raise ConfigError("FFJORDConfig.class_conditional=True is not supported: FFJORD's vector field is unconditional; set it to false")


@register("ffjord", FFJORDConfig, family="flows", summary="FFJORD: continuous normalizing flow, ODE likelihood (exact or Hutchinson trace)")
class FFJORD(FlowModel):
    """A continuous normalizing flow: `self.transform` is a `ContinuousFlow` whose field f(z, t) is an
    MLP for vectors and a small convolutional net for images, after `FlowModel`'s preprocessing
    (logit for images) and dequantization (uniform on data with levels).

    loss terms: nll (nats), bits_per_dim, nfe (evaluations of f in the forward solve) and, when
    their weights are > 0, kinetic_energy and jacobian_frobenius (means over the batch).

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="vector", shape=(2,), value_range=(-4.0, 4.0))
    >>> model = FFJORD(FFJORDConfig(hidden=(16, 16)), spec)
    >>> loss = model.loss(Batch(torch.randn(8, 2)))
    >>> sorted(loss.terms)
    ['bits_per_dim', 'jacobian_frobenius', 'kinetic_energy', 'nfe', 'nll']
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """

    config: FFJORDConfig
    # 1,000 steps: each one integrates an ODE, so a short run is what a CPU affords (README, flows).
    # ema_decay 0.99: the engine's 0.999 would keep a third of the initial weights after 1,000 steps;
    # sample_every 0: each density plot integrates 40,000 grid points, so only the final one
    train_defaults = {"max_steps": 1000, "batch_size": 256, "lr": 3e-3, "lr_schedule": "cosine", "ema_decay": 0.99, "sample_every": 0}

    def __init__(self, config: FFJORDConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.kind == "image":
            if len(spec.shape) != 3:
                raise ConfigError(f"FFJORD's convolutional field needs images of shape (C, H, W), got {spec.shape}")
            field: nn.Module = ConvVectorField(spec.shape[0], channels=config.channels, blocks=config.blocks)
        else:
            if len(spec.shape) != 1:
                raise ConfigError(f"FFJORD's MLP field needs vectors of shape (D,), got {spec.shape}")
            field = MLPVectorField(spec.shape[0], config.hidden)
        trace = config.trace
        if trace == "auto":
            trace = "exact" if spec.dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
        self.transform = ContinuousFlow(
            field,
            time_length=config.time_length,
            trace=trace,
            probe=config.probe,
            solver=config.solver,
            rtol=config.rtol,
            atol=config.atol,
            eval_rtol=config.eval_rtol,
            eval_atol=config.eval_atol,
            step_size=config.step_size,
            adjoint=config.adjoint,
            regularize=config.kinetic_energy > 0 or config.jacobian_frobenius > 0,
        )

    def initialize(self, train, generator: torch.Generator) -> None:
        """Nothing to initialise from data (no ActNorm); skipping FlowModel's pass saves an ODE solve."""

    def loss(self, batch: Batch) -> Loss:
        """FlowModel's mean NLL + kinetic_energy * mean int ||f||^2 dt + jacobian_frobenius * mean
        int ||df/dz||_F^2 dt (Finlay et al. 2020; the integrals only in differentiable solves)."""
        result = super().loss(batch)
        stats = self.transform.last_solve
        self.transform.last_solve = SolveStats(nfe=stats.nfe)  # the integrals' graph lives on in the loss alone
        total, terms = result.total, dict(result.terms)
        terms["nfe"] = torch.tensor(float(stats.nfe))
        if stats.kinetic_energy is not None:
            kinetic, frobenius = stats.kinetic_energy.mean(), stats.jacobian_frobenius.mean()
            total = total + self.config.kinetic_energy * kinetic + self.config.jacobian_frobenius * frobenius
            terms["kinetic_energy"], terms["jacobian_frobenius"] = kinetic.detach(), frobenius.detach()
        return Loss(total, terms)

    def log_prob(self, x: Tensor, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """log p(x) per sample in nats, (B,) (see `FlowModel.log_prob`). With the Hutchinson trace an
        unbiased estimate, its probes drawn from `generator` (else a fixed seed, so the same x gives
        the same number)."""
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(_LOG_PROB_SEED)
        with self.transform.probes_from(generator):
            return super().log_prob(x, cond, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z(T) ~ N(0, I), integrated back to z(0) (without the log-density, which sampling does not
        need), then mapped to the data space: (n, *spec.shape), quantized to the data's levels."""
        if cond is not None:
            raise ConfigError("FFJORD is unconditional; pass cond=None")
        z = self.base_sample((n, *self.latent_shape), generator)
        x = self.postprocess(self.transform.integrate(z, self.transform.time_length, 0.0))
        return quantize(x, self.spec) if self.spec.levels is not None else x
