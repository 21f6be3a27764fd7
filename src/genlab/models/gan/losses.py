"""Adversarial losses: each a small object with `discriminator_loss(real_out, fake_out)` and
`generator_loss(fake_out)`, both scalars to minimise, and the regularisers of D it comes with
(`regularizers()`: WGAN's weight clipping, WGAN-GP's gradient penalty). Every loss is registered
by its config word (`@register_loss("hinge")`); `LOSSES` is the registry's view of the names and
`build_loss(name, **options)` builds one. Regularisers are objects too: a penalty added to D's
loss (`GradientPenalty`, `R1Penalty`, `DriftPenalty`) or a projection after D's step
(`WeightClipping`); the GAN's step calls them without knowing which loss it trains.

Notation: x ~ P the data, G(z) ~ Q the generator's samples; `real_out` = D(x), `fake_out` =
D(G(z)), shapes (B,), the discriminator's raw outputs (a logit, a critic value, or the f-GAN's
V(x) before its output activation). Means are over the batch.

=================  ==========================================================================
loss               discriminator minimises / generator minimises
=================  ==========================================================================
minimax            -E log sigma(D(x)) - E log(1 - sigma(D(G(z))))  /  E log(1 - sigma(D(G(z))))
                   (Goodfellow et al. 2014, eq. 1; at the optimal D the value is
                   -log 4 + 2 JSD(P || Q), their Theorem 1)
non-saturating     the same D loss  /  -E log sigma(D(G(z)))  (Goodfellow et al. 2014, sec. 3)
least-squares      1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2  /  1/2 E (D(G(z)) - c)^2
                   (Mao et al. 2017, eq. 2; a = -1, b = 1, c = 0 makes it Pearson chi^2 of
                   (P + Q) against 2Q; the default 0-1 coding a = 0, b = c = 1 is their experiments')
wasserstein        E D(G(z)) - E D(x)  /  -E D(G(z)), D kept Lipschitz by weight clipping
                   (Arjovsky et al. 2017, Algorithm 1)
wasserstein-gp     the same, D kept Lipschitz by `gradient_penalty` (Gulrajani et al. 2017,
                   Algorithm 1: + lambda E (||grad D(x_hat)|| - 1)^2)
hinge              E relu(1 - D(x)) + E relu(1 + D(G(z)))  /  -E D(G(z))
                   (Lim & Ye 2017; Miyato et al. 2018, eq. 17; Zhang et al. 2019, SAGAN)
f-gan              -(E g_f(V(x)) - E f*(g_f(V(G(z)))))  /  -E g_f(V(G(z)))
                   (Nowozin et al. 2016, eq. 6 and the generator update of sec. 3.2)
=================  ==========================================================================

Regularisers any loss may take (GANConfig's r1_gamma, drift_weight): R1, gamma / 2 E_P ||grad_x
D(x)||^2 (Mescheder et al. 2018, eq. 9), and ProGAN's drift, epsilon E_P D(x)^2 (Karras et al.
2018, appendix A.1).

f-GAN: for a convex f with f(1) = 0, D_f(P || Q) = E_Q f(p/q) >= sup_T E_P T(x) - E_Q f*(T(x))
(Nguyen et al. 2010), with equality at T*(x) = f'(p(x)/q(x)); f* is the convex conjugate
f*(t) = sup_u (t u - f(u)) and T = g_f(V) an output activation that keeps T in the domain of f*.
The `F_DIVERGENCES` table holds f, f', f*, g_f and g_f's inverse (Nowozin et al. 2016, Tables 1, 2
and 6).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError

_LOG2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """The settings a loss may read when it is built from a config word (GANConfig's fields of
    the same names): ls_targets (a, b, c) of least squares, the f-GAN's divergence, WGAN's clipping
    bound and WGAN-GP's lambda."""

    ls_targets: tuple[float, float, float] = (0.0, 1.0, 1.0)
    divergence: str = "jensen-shannon"
    weight_clip: float = 0.01
    gp_weight: float = 10.0


LOSS_REGISTRY: dict[str, type["AdversarialLoss"]] = {}
# the registered names, a live view: a loss registered later is a valid config word at once
LOSSES = LOSS_REGISTRY.keys()


def register_loss(name: str) -> Callable[[type["AdversarialLoss"]], type["AdversarialLoss"]]:
    """Class decorator: `@register_loss("hinge")` makes `loss="hinge"` build this class (by its
    `from_options`) and sets the class's `name`."""

    def decorate(cls: type[AdversarialLoss]) -> type[AdversarialLoss]:
        previous = LOSS_REGISTRY.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ConfigError(f"loss name {name!r} is registered twice ({previous.__name__}, {cls.__name__})")
        cls.name = name
        LOSS_REGISTRY[name] = cls
        return cls

    return decorate


def build_loss(name: str, **options: Any) -> "AdversarialLoss":
    """The loss object for a config word; options: the fields of `LossOptions` (defaults for the rest)."""
    if name not in LOSS_REGISTRY:
        raise ConfigError(f"loss={name!r} is unknown; choose one of {', '.join(map(repr, LOSSES))}")
    return LOSS_REGISTRY[name].from_options(LossOptions(**options))


# -- regularisers of the discriminator --------------------------------------------------------------
Critic = Callable[[Tensor], Tensor]


class DiscriminatorRegularizer:
    """A constraint on D that its training step applies: `penalty(...)`, a scalar added to D's
    loss as `weight * penalty` and logged (unweighted) as `term`, or None; and `after_step(D)`,
    a projection of D's weights after its optimizer step. `per_sample`: the penalty needs each
    sample's output to depend on that sample alone, which batch normalisation breaks."""

    term: str = ""
    weight: float = 1.0
    per_sample: bool = False

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, real_out: Tensor) -> Tensor | None:
        """critic: x (B, ...) -> D(x) (B,) with the step's labels and growth; real, fake: D's inputs
        (B, ...); real_out: D(real) (B,), already computed. None: no term."""
        return None

    def after_step(self, discriminator: nn.Module) -> None:
        """Called after each step of D's optimizer."""


@dataclasses.dataclass
class GradientPenalty(DiscriminatorRegularizer):
    """WGAN-GP's lambda E (||grad D(x_hat)|| - 1)^2 on interpolates x_hat (see `gradient_penalty`)."""

    weight: float = 10.0
    term = "gradient_penalty"
    per_sample = True

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, real_out: Tensor) -> Tensor:
        return gradient_penalty(critic, real, fake)


@dataclasses.dataclass
class R1Penalty(DiscriminatorRegularizer):
    """Mescheder et al. (2018), eq. 9: R1 = gamma / 2 E_P ||grad_x D(x)||^2 on the real data, which
    keeps D flat on the data manifold and makes the GAN's equilibrium locally convergent for any
    of the losses here. `weight` is gamma / 2; the logged term `r1` is E_P ||grad_x D(x)||^2."""

    gamma: float = 10.0
    term = "r1"
    per_sample = True

    @property
    def weight(self) -> float:  # type: ignore[override]
        return 0.5 * self.gamma

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, real_out: Tensor) -> Tensor:
        return r1_penalty(critic, real)


@dataclasses.dataclass
class DriftPenalty(DiscriminatorRegularizer):
    """ProGAN's epsilon_drift E_P D(x)^2 (Karras et al. 2018, appendix A.1), which keeps a critic's
    outputs near 0 where the Wasserstein loss fixes only their differences."""

    weight: float = 0.001
    term = "drift"

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, real_out: Tensor) -> Tensor:
        return real_out.float().pow(2).mean()


@dataclasses.dataclass
class WeightClipping(DiscriminatorRegularizer):
    """WGAN's w <- clip(w, -c, c) after every critic step (see `clip_weights`)."""

    bound: float = 0.01

    def after_step(self, discriminator: nn.Module) -> None:
        clip_weights(discriminator, self.bound)


class AdversarialLoss:
    """The interface every loss keeps. `discriminator_loss` and `generator_loss` return scalars to
    minimise; `real_decision(out)` says where the discriminator calls a sample real (for the
    accuracy diagnostics), or returns None when the loss has no such threshold (Wasserstein);
    `regularizers()` are the constraints on D the loss needs (WGAN's Lipschitz constraint);
    `estimates(real_out, fake_out)` the distances between P and Q its D values estimate, by name
    (logged detached)."""

    name: str = ""

    @classmethod
    def from_options(cls, options: LossOptions) -> AdversarialLoss:
        """The loss for `build_loss`; a loss with settings reads them from `options`."""
        return cls()

    def regularizers(self) -> tuple[DiscriminatorRegularizer, ...]:
        return ()

    def estimates(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        return {}

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        raise NotImplementedError

    def real_decision(self, out: Tensor) -> Tensor | None:
        """Boolean (B,): does the discriminator call these samples real?"""
        return out > 0


@register_loss("minimax")
class MinimaxLoss(AdversarialLoss):
    """Goodfellow et al. (2014), eq. 1: V(D, G) = E_P log D(x) + E_Q log(1 - D(G(z))), D = sigmoid(logit).

    D maximises V, so its loss is -V = E softplus(-D(x)) + E softplus(D(G(z))) (log sigma(l) =
    -softplus(-l), log(1 - sigma(l)) = -softplus(l)); G minimises V itself, whose gradient
    vanishes when D rejects the fakes confidently (the "saturating" loss).
    """

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        return -F.softplus(fake_out).mean()  # E log(1 - D(G(z)))


@register_loss("non-saturating")
class NonSaturatingLoss(MinimaxLoss):
    """Goodfellow et al. (2014), sec. 3: G maximises E log D(G(z)) instead, the same fixed point with
    strong gradients early in training: generator loss E softplus(-D(G(z)))."""

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        return F.softplus(-fake_out).mean()


@register_loss("least-squares")
@dataclasses.dataclass
class LeastSquaresLoss(AdversarialLoss):
    """Mao et al. (2017), eq. 2: D loss 1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2,
    G loss 1/2 E (D(G(z)) - c)^2; a codes fake, b real, c the value G wants D to believe."""

    a: float = 0.0
    b: float = 1.0
    c: float = 1.0

    @classmethod
    def from_options(cls, options: LossOptions) -> LeastSquaresLoss:
        return cls(*options.ls_targets)

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return 0.5 * (real_out - self.b).pow(2).mean() + 0.5 * (fake_out - self.a).pow(2).mean()

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        return 0.5 * (fake_out - self.c).pow(2).mean()

    def real_decision(self, out: Tensor) -> Tensor:
        return out > 0.5 * (self.a + self.b)


class CriticLoss(AdversarialLoss):
    """Arjovsky et al. (2017): the critic D maximises E_P D(x) - E_Q D(G(z)), which over
    1-Lipschitz D is W1(P, Q) (Kantorovich-Rubinstein duality); G minimises -E D(G(z)).
    The Lipschitz constraint is each subclass's regulariser (weight clipping, gradient penalty)."""

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return fake_out.mean() - real_out.mean()

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        return -fake_out.mean()

    def real_decision(self, out: Tensor) -> None:
        return None  # a critic value has no threshold; the model compares with the batch's means

    def estimates(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        return {"wasserstein": real_out.mean() - fake_out.mean()}  # W1(P, Q) for a 1-Lipschitz D


@register_loss("wasserstein")
@dataclasses.dataclass
class WassersteinLoss(CriticLoss):
    """WGAN (Arjovsky et al. 2017, Algorithm 1): the critic loss with weight clipping to
    [-weight_clip, weight_clip] after each critic step."""

    weight_clip: float = 0.01

    @classmethod
    def from_options(cls, options: LossOptions) -> WassersteinLoss:
        return cls(options.weight_clip)

    def regularizers(self) -> tuple[DiscriminatorRegularizer, ...]:
        return (WeightClipping(self.weight_clip),)


@register_loss("wasserstein-gp")
@dataclasses.dataclass
class WassersteinGPLoss(CriticLoss):
    """WGAN-GP (Gulrajani et al. 2017, Algorithm 1): the critic loss plus
    gp_weight * E (||grad D(x_hat)||_2 - 1)^2 (`GradientPenalty`)."""

    gp_weight: float = 10.0

    @classmethod
    def from_options(cls, options: LossOptions) -> WassersteinGPLoss:
        return cls(options.gp_weight)

    def regularizers(self) -> tuple[DiscriminatorRegularizer, ...]:
        return (GradientPenalty(self.gp_weight),)


@register_loss("hinge")
class HingeLoss(AdversarialLoss):
    """Lim & Ye (2017), Miyato et al. (2018) eq. 17: D loss E relu(1 - D(x)) + E relu(1 + D(G(z))),
    G loss -E D(G(z)) (as SAGAN, Zhang et al. 2019, eq. 3)."""

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.relu(1.0 - real_out).mean() + F.relu(1.0 + fake_out).mean()

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        return -fake_out.mean()


# -- f-divergences (Nowozin et al. 2016) ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FDivergence:
    """One row of Nowozin et al. (2016), Tables 1, 2 and 6.

    f(u): the convex generator, D_f(P || Q) = E_Q f(p/q); f_prime: f'(u), so T*(x) = f'(p/q);
    conjugate: f*(t) on its domain; activation: g_f(v), mapping R onto that domain; and
    activation_inverse: g_f^-1(t). conjugate_of_activation(v) = f*(g_f(v)) written in v so that it
    stays finite in floating point. f_prime_at_1 = f'(1), the value of T where P and Q agree (the
    discriminator's threshold between "real" and "fake").
    """

    name: str
    f: Callable[[Tensor], Tensor]
    f_prime: Callable[[Tensor], Tensor]
    conjugate: Callable[[Tensor], Tensor]
    activation: Callable[[Tensor], Tensor]
    activation_inverse: Callable[[Tensor], Tensor]
    conjugate_of_activation: Callable[[Tensor], Tensor]
    f_prime_at_1: float


F_DIVERGENCES: dict[str, FDivergence] = {
    # KL(P || Q) = E_P log(p/q)
    "kl": FDivergence(
        "kl",
        f=lambda u: u * torch.log(u),
        f_prime=lambda u: 1.0 + torch.log(u),
        conjugate=lambda t: torch.exp(t - 1.0),
        activation=lambda v: v,
        activation_inverse=lambda t: t,
        conjugate_of_activation=lambda v: torch.exp(v - 1.0),
        f_prime_at_1=1.0,
    ),
    # KL(Q || P) = E_Q log(q/p); f*(t) = -1 - log(-t), t < 0; with g_f(v) = -exp(-v): f* = v - 1
    "reverse-kl": FDivergence(
        "reverse-kl",
        f=lambda u: -torch.log(u),
        f_prime=lambda u: -1.0 / u,
        conjugate=lambda t: -1.0 - torch.log(-t),
        activation=lambda v: -torch.exp(-v),
        activation_inverse=lambda t: -torch.log(-t),
        conjugate_of_activation=lambda v: v - 1.0,
        f_prime_at_1=-1.0,
    ),
    # f as in the paper's table gives D_f = KL(P || M) + KL(Q || M) = 2 JSD(P, Q), M = (P + Q) / 2;
    # f*(t) = -log(2 - e^t), t < log 2; g_f(v) = log 2 - softplus(-v): f* = softplus(v) - log 2
    "jensen-shannon": FDivergence(
        "jensen-shannon",
        f=lambda u: u * torch.log(u) - (u + 1.0) * torch.log((u + 1.0) / 2.0),
        f_prime=lambda u: torch.log(2.0 * u / (1.0 + u)),
        conjugate=lambda t: -torch.log(2.0 - torch.exp(t)),
        activation=lambda v: _LOG2 - F.softplus(-v),
        activation_inverse=lambda t: -torch.log(2.0 * torch.exp(-t) - 1.0),
        conjugate_of_activation=lambda v: F.softplus(v) - _LOG2,
        f_prime_at_1=0.0,
    ),
    # Pearson chi^2 = E_Q (p/q - 1)^2
    "pearson": FDivergence(
        "pearson",
        f=lambda u: (u - 1.0) ** 2,
        f_prime=lambda u: 2.0 * (u - 1.0),
        conjugate=lambda t: 0.25 * t**2 + t,
        activation=lambda v: v,
        activation_inverse=lambda t: t,
        conjugate_of_activation=lambda v: 0.25 * v**2 + v,
        f_prime_at_1=0.0,
    ),
    # squared Hellinger = E_Q (sqrt(p/q) - 1)^2 = int (sqrt p - sqrt q)^2;
    # f*(t) = t / (1 - t), t < 1; with g_f(v) = 1 - exp(-v): f* = exp(v) - 1
    "squared-hellinger": FDivergence(
        "squared-hellinger",
        f=lambda u: (torch.sqrt(u) - 1.0) ** 2,
        f_prime=lambda u: 1.0 - 1.0 / torch.sqrt(u),
        conjugate=lambda t: t / (1.0 - t),
        activation=lambda v: 1.0 - torch.exp(-v),
        activation_inverse=lambda t: -torch.log(1.0 - t),
        conjugate_of_activation=lambda v: torch.expm1(v),
        f_prime_at_1=0.0,
    ),
}


@register_loss("f-gan")
@dataclasses.dataclass
class FGANLoss(AdversarialLoss):
    """Nowozin et al. (2016), eq. 6: F(theta, omega) = E_P g_f(V(x)) - E_Q f*(g_f(V(G(z)))), a lower
    bound on D_f(P || Q) that the discriminator V maximises (its loss is -F). The generator takes
    the paper's alternative update (sec. 3.2), maximising E_Q g_f(V(G(z))) rather than minimising
    F, for stronger gradients early on.

    `divergence(real_out, fake_out)` is F itself, the variational estimate of D_f.
    """

    divergence_name: str = "jensen-shannon"

    @classmethod
    def from_options(cls, options: LossOptions) -> FGANLoss:
        return cls(options.divergence)

    def __post_init__(self) -> None:
        if self.divergence_name not in F_DIVERGENCES:
            raise ConfigError(f"divergence={self.divergence_name!r} is unknown; choose one of {', '.join(map(repr, F_DIVERGENCES))}")
        self.f_divergence = F_DIVERGENCES[self.divergence_name]

    def divergence(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """E_P g_f(V(x)) - E_Q f*(g_f(V(G(z)))) <= D_f(P || Q)."""
        fd = self.f_divergence
        return fd.activation(real_out).mean() - fd.conjugate_of_activation(fake_out).mean()

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return -self.divergence(real_out, fake_out)

    def generator_loss(self, fake_out: Tensor) -> Tensor:
        return -self.f_divergence.activation(fake_out).mean()

    def real_decision(self, out: Tensor) -> Tensor:
        return self.f_divergence.activation(out) > self.f_divergence.f_prime_at_1  # T* = f'(p/q) > f'(1) iff p > q

    def estimates(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        return {"f_divergence": self.divergence(real_out, fake_out)}


# -- the penalties and the clipping ----------------------------------------------------------------
def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    alpha: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017, Algorithm 1, lines 6-7):

        x_hat = alpha x + (1 - alpha) x_tilde,  alpha ~ U[0, 1] per sample,
        GP = E (||grad_x D(x_hat)||_2 - 1)^2

    critic: x (B, ...) -> (B,), each sample's output depending on that sample alone (no batch
    normalisation). real, fake: (B, ...). alpha: (B,) to fix the interpolation, else drawn from
    `generator` (or the global RNG). Differentiable in the critic's parameters (create_graph).
    Returns a scalar; multiply by lambda (10 in the paper).
    """
    batch = real.shape[0]
    if alpha is None:
        alpha = torch.rand(batch, generator=generator, device=real.device if generator is None else generator.device)
    alpha = alpha.to(real).reshape(batch, *([1] * (real.dim() - 1)))
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).to(torch.promote_types(grad.dtype, torch.float32)).norm(dim=1)  # (B, ...) -> (B,); fp32 at least
    return (norm - 1.0).pow(2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """E_P ||grad_x D(x)||_2^2 on the real samples (Mescheder et al. 2018, eq. 9, without its
    gamma / 2). critic: x (B, ...) -> (B,), each output depending on its own sample alone; real
    (B, ...). Differentiable in the critic's parameters (create_graph). Returns a scalar."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).to(torch.promote_types(grad.dtype, torch.float32)).pow(2).sum(dim=1).mean()  # (B, ...) -> (B,) -> ()


@torch.no_grad()
def clip_weights(module: nn.Module, bound: float) -> None:
    """WGAN's weight clipping (Arjovsky et al. 2017, Algorithm 1, line 7): w <- clip(w, -c, c) for
    every parameter of the critic, which bounds its Lipschitz constant."""
    for p in module.parameters():
        p.clamp_(-bound, bound)
