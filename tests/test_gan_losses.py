"""GAN losses against their mathematics: the minimax value at the optimal discriminator is
-log 4 + 2 JSD (Goodfellow et al. 2014); each f-GAN bound at T* = f'(p/q) equals the f-divergence
(closed forms and quadrature) and a small trained critic approaches it (Nowozin et al. 2016);
the gradient penalty equals a finite-difference gradient norm; a WGAN-GP critic on two 1D
Gaussians estimates W1 = int_0^1 |F_P^-1(u) - F_Q^-1(u)| du; R1 equals the squared input
gradient; least squares, hinge and every loss's gradient signs; the registry of losses and the
regularisers each loss brings."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats
from torch import nn

from genlab.errors import ConfigError
from genlab.models.gan import GANConfig
from genlab.models.gan.losses import (
    F_DIVERGENCES,
    LOSS_REGISTRY,
    LOSSES,
    DriftPenalty,
    FGANLoss,
    GradientPenalty,
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    R1Penalty,
    WassersteinGPLoss,
    WassersteinLoss,
    WeightClipping,
    build_loss,
    gradient_penalty,
    r1_penalty,
    register_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# P = N(0, 1) the data, Q = N(M_Q, S_Q^2) the generator: S_Q > S_P / sqrt 2 keeps Pearson chi^2 finite
M_P, S_P, M_Q, S_Q = 0.0, 1.0, 1.0, 1.1
GRID = 100_000


def quantile_grid(mean, std, n=GRID):
    """x_i = F^-1((i + 1/2) / n): the mean of h over them is a midpoint rule for E h(X), deterministic."""
    u = (np.arange(n) + 0.5) / n
    return torch.from_numpy(stats.norm.ppf(u, loc=mean, scale=std))


def log_p(x):
    return torch.distributions.Normal(torch.tensor(M_P, dtype=torch.float64), S_P).log_prob(x)


def log_q(x):
    return torch.distributions.Normal(torch.tensor(M_Q, dtype=torch.float64), S_Q).log_prob(x)


X = np.linspace(-25.0, 25.0, 100_001)  # beyond +-25 both densities are below 1e-60


def by_quadrature(integrand):
    """int integrand(x) dx by Simpson's rule on X; integrand maps an array of x to an array."""
    return float(integrate.simpson(integrand(X), x=X))


def densities(x):
    return stats.norm(M_P, S_P).pdf(x), stats.norm(M_Q, S_Q).pdf(x)


def f_divergence_by_quadrature(name):
    """D_f(P || Q) = int q f(p / q) dx, with p / q from log-densities (no underflow in the tails)."""
    f = F_DIVERGENCES[name].f
    ratio = lambda x: np.exp(stats.norm(M_P, S_P).logpdf(x) - stats.norm(M_Q, S_Q).logpdf(x))  # noqa: E731
    return by_quadrature(lambda x: densities(x)[1] * f(torch.from_numpy(ratio(x))).numpy())


def gaussian_kl(m1, s1, m2, s2):
    """KL(N(m1, s1^2) || N(m2, s2^2)) in closed form."""
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def jsd_by_quadrature():
    """JSD(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M), M = (P + Q) / 2."""

    def integrand(x):
        p, q = densities(x)
        m = 0.5 * (p + q)
        return 0.5 * (p * np.log(np.maximum(p, 1e-300) / m) + q * np.log(np.maximum(q, 1e-300) / m))

    return by_quadrature(integrand)


# -- minimax ---------------------------------------------------------------------------------------------
def test_minimax_value_at_the_optimal_discriminator_is_minus_log4_plus_twice_jsd():
    x_real, x_fake = quantile_grid(M_P, S_P), quantile_grid(M_Q, S_Q)
    # D*(x) = p / (p + q), whose logit is log p - log q
    optimal_logit = lambda x: log_p(x) - log_q(x)  # noqa: E731
    value = -MinimaxLoss().discriminator_loss(optimal_logit(x_real), optimal_logit(x_fake))
    expected = -math.log(4.0) + 2.0 * jsd_by_quadrature()
    assert abs(float(value) - expected) < 1e-4, (float(value), expected)
    # any other discriminator scores less (D* is the maximiser)
    for worse in (lambda x: 0.7 * optimal_logit(x), lambda x: optimal_logit(x) + 0.3):
        assert float(-MinimaxLoss().discriminator_loss(worse(x_real), worse(x_fake))) < expected - 1e-3
    # non-saturating GAN: the same discriminator loss
    torch.testing.assert_close(NonSaturatingLoss().discriminator_loss(optimal_logit(x_real), optimal_logit(x_fake)), -value)


# -- f-GAN -----------------------------------------------------------------------------------------------
CLOSED_FORMS = {
    "kl": lambda: gaussian_kl(M_P, S_P, M_Q, S_Q),
    "reverse-kl": lambda: gaussian_kl(M_Q, S_Q, M_P, S_P),
    "jensen-shannon": lambda: 2.0 * jsd_by_quadrature(),  # the table's f gives D_f = 2 JSD
    "pearson": lambda: by_quadrature(lambda x: (densities(x)[0] - densities(x)[1]) ** 2 / densities(x)[1]),
    "squared-hellinger": lambda: by_quadrature(lambda x: (np.sqrt(densities(x)[0]) - np.sqrt(densities(x)[1])) ** 2),
}


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_f_divergence_table_is_consistent(name):
    fd = F_DIVERGENCES[name]
    # the f of the table is the one the closed form (or independent quadrature) measures
    assert f_divergence_by_quadrature(name) == pytest.approx(CLOSED_FORMS[name](), rel=1e-6)
    v = torch.linspace(-3.0, 3.0, 61, dtype=torch.float64)
    t = fd.activation(v)
    # f*(g_f(v)) written in v is the composition; g_f^-1 inverts g_f
    torch.testing.assert_close(fd.conjugate_of_activation(v), fd.conjugate(t))
    torch.testing.assert_close(fd.activation_inverse(t), v)
    # f* is the Fenchel conjugate: f*(t) = sup_u t u - f(u), maximised at u = (f')^-1(t) (for the t
    # that f' reaches on u > 0: Pearson's f' = 2 (u - 1) starts at -2)
    f_prime_at_0 = float(fd.f_prime(torch.tensor(1e-12, dtype=torch.float64)))
    for t_k in [t_k for t_k in t[::6].tolist() if t_k > f_prime_at_0 + 1e-6]:
        best = optimize.minimize_scalar(lambda log_u: -(t_k * math.exp(log_u) - float(fd.f(torch.tensor(math.exp(log_u), dtype=torch.float64)))),
                                        bounds=(-30.0, 30.0), method="bounded", options={"xatol": 1e-10})
        assert -best.fun == pytest.approx(float(fd.conjugate(torch.tensor(t_k, dtype=torch.float64))), abs=1e-6)
    assert float(fd.f(torch.tensor(1.0, dtype=torch.float64))) == 0.0
    assert float(fd.f_prime(torch.tensor(1.0, dtype=torch.float64))) == fd.f_prime_at_1


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_f_gan_bound_at_the_optimal_critic_equals_the_divergence(name):
    fd, loss = F_DIVERGENCES[name], FGANLoss(name)
    x_real, x_fake = quantile_grid(M_P, S_P), quantile_grid(M_Q, S_Q)

    def optimal_v(x):  # T*(x) = f'(p(x) / q(x)), and V* = g_f^-1(T*)
        return fd.activation_inverse(fd.f_prime(torch.exp(log_p(x) - log_q(x))))

    bound = loss.divergence(optimal_v(x_real), optimal_v(x_fake))
    assert float(bound) == pytest.approx(CLOSED_FORMS[name](), rel=2e-3, abs=1e-4)
    torch.testing.assert_close(loss.discriminator_loss(optimal_v(x_real), optimal_v(x_fake)), -bound)
    # a critic away from T* gives a strictly lower bound
    worse = loss.divergence(optimal_v(x_real) + 0.2, optimal_v(x_fake) + 0.2)
    assert float(worse) < float(bound) - 1e-3


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_a_trained_f_gan_critic_approaches_the_divergence(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    loss = FGANLoss(name)
    critic = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    optimizer = torch.optim.Adam(critic.parameters(), lr=5e-3)
    for _ in range(200):
        x_real = M_P + S_P * torch.randn(512, 1, generator=g, dtype=torch.float64)
        x_fake = M_Q + S_Q * torch.randn(512, 1, generator=g, dtype=torch.float64)
        d_loss = loss.discriminator_loss(critic(x_real).squeeze(1), critic(x_fake).squeeze(1))
        optimizer.zero_grad()
        d_loss.backward()
        optimizer.step()
    with torch.no_grad():
        x_real, x_fake = quantile_grid(M_P, S_P, 20_000)[:, None], quantile_grid(M_Q, S_Q, 20_000)[:, None]
        estimate = float(loss.divergence(critic(x_real).squeeze(1), critic(x_fake).squeeze(1)))
    exact = CLOSED_FORMS[name]()
    assert 0.85 * exact < estimate < exact + 0.01, (estimate, exact)


# -- Wasserstein ------------------------------------------------------------------------------------------
def test_gradient_penalty_equals_a_finite_difference_estimate():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 16), nn.Softplus(), nn.Linear(16, 1)).double()
    real, fake = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) + 1.0
    alpha = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
    penalty = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake, alpha=alpha)

    x_hat = alpha[:, None] * real + (1 - alpha[:, None]) * fake
    h = 1e-6
    with torch.no_grad():
        grads = torch.stack([(critic(x_hat + h * e).squeeze(1) - critic(x_hat - h * e).squeeze(1)) / (2 * h)
                             for e in torch.eye(3, dtype=torch.float64)], dim=1)  # (B, 3)
    expected = ((grads.norm(dim=1) - 1.0) ** 2).mean()
    torch.testing.assert_close(penalty, expected, rtol=1e-7, atol=1e-9)
    # differentiable in the critic's parameters (the critic's loss includes it)
    penalty.backward()
    assert all(float(layer.weight.grad.abs().sum()) > 0 for layer in (critic[0], critic[2]))


def test_gradient_penalty_of_a_1_lipschitz_linear_critic_is_zero():
    w = torch.tensor([0.6, 0.8])  # unit norm: ||grad|| = 1 everywhere
    penalty = gradient_penalty(lambda x: x @ w, torch.randn(7, 2), torch.randn(7, 2), generator=torch.Generator().manual_seed(0))
    assert float(penalty) < 1e-12
    steep = gradient_penalty(lambda x: x @ (3 * w), torch.randn(7, 2), torch.randn(7, 2))
    assert float(steep) == pytest.approx(4.0)  # (3 - 1)^2


def test_a_wgan_gp_critic_estimates_w1_between_two_gaussians():
    # the quantile functions cross, so the optimal critic is not a line: W1 = int |F_P^-1 - F_Q^-1|
    m1, s1, m2, s2 = 0.0, 1.0, 1.0, 2.0
    exact = integrate.quad(lambda u: abs(stats.norm.ppf(u, m1, s1) - stats.norm.ppf(u, m2, s2)), 0.0, 1.0, limit=200)[0]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    critic = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3, betas=(0.5, 0.9))
    loss = WassersteinLoss()
    f = lambda x: critic(x).squeeze(1)  # noqa: E731
    for step in range(300):
        real = m1 + s1 * torch.randn(256, 1, generator=g, dtype=torch.float64)
        fake = m2 + s2 * torch.randn(256, 1, generator=g, dtype=torch.float64)
        # lambda ramps up to 10: in 1D a critic whose slope starts with the wrong sign cannot turn
        # it through 0 against a penalty of lambda (1 - 0)^2 > the 2 W1 it would gain
        lam = 10.0 * min(1.0, step / 50)
        d_loss = loss.discriminator_loss(f(real), f(fake)) + lam * gradient_penalty(f, real, fake, generator=g)
        optimizer.zero_grad()
        d_loss.backward()
        optimizer.step()
    with torch.no_grad():
        estimate = float(f(quantile_grid(m1, s1, 20_000)[:, None]).mean() - f(quantile_grid(m2, s2, 20_000)[:, None]).mean())
    assert estimate == pytest.approx(exact, rel=0.08), (estimate, exact)


# -- the other losses' formulas --------------------------------------------------------------------------
def test_least_squares_loss_is_its_formula_for_any_codes():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(9, generator=g), torch.randn(9, generator=g)
    for a, b, c in [(0.0, 1.0, 1.0), (-1.0, 1.0, 0.0), (0.3, 2.0, -0.5)]:
        loss = LeastSquaresLoss(a, b, c)
        expected_d = 0.5 * sum((r - b) ** 2 for r in real.tolist()) / 9 + 0.5 * sum((f - a) ** 2 for f in fake.tolist()) / 9
        expected_g = 0.5 * sum((f - c) ** 2 for f in fake.tolist()) / 9
        assert float(loss.discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-6)
        assert float(loss.generator_loss(fake)) == pytest.approx(expected_g, rel=1e-6)
        assert bool(loss.real_decision(torch.tensor([b]))) and not bool(loss.real_decision(torch.tensor([a])))


def test_least_squares_with_pearson_codes_at_the_optimal_d():
    # Mao et al. (2017), sec. 3.2: with b - c = 1 and b - a = 2, at D*(x) = (b p + a q) / (p + q) the
    # generator's objective 1/2 E_{P+Q}[(D* - c)^2] equals 1/2 chi^2_Pearson(P + Q || 2Q)
    a, b, c = -1.0, 1.0, 0.0
    x_real, x_fake = quantile_grid(M_P, S_P), quantile_grid(M_Q, S_Q)

    def d_star(x):
        p, q = log_p(x).exp(), log_q(x).exp()
        return (b * p + a * q) / (p + q)

    loss = LeastSquaresLoss(a, b, c)
    objective = loss.generator_loss(d_star(x_fake)) + 0.5 * ((d_star(x_real) - c) ** 2).mean()
    chi2 = by_quadrature(lambda x: (densities(x)[1] - densities(x)[0]) ** 2 / np.maximum(densities(x)[0] + densities(x)[1], 1e-300))
    assert float(2 * objective) == pytest.approx(chi2, rel=1e-3)


def test_hinge_loss_is_its_formula():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, -0.5, 1.0])
    # relu(1 - r): 0, 0.5, 2 -> mean 5/6; relu(1 + f): 0, 0.5, 2 -> mean 5/6
    assert float(HingeLoss().discriminator_loss(real, fake)) == pytest.approx(5 / 3)
    assert float(HingeLoss().generator_loss(fake)) == pytest.approx(-(-2.0 - 0.5 + 1.0) / 3)


def test_wasserstein_loss_is_the_negated_difference_of_means():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -1.0])
    assert float(WassersteinLoss().discriminator_loss(real, fake)) == pytest.approx(-0.5 - 2.0)
    assert float(WassersteinLoss().generator_loss(fake)) == pytest.approx(0.5)


ALL_LOSSES = [MinimaxLoss(), NonSaturatingLoss(), LeastSquaresLoss(), LeastSquaresLoss(-1.0, 1.0, 0.0), WassersteinLoss(), HingeLoss()] + [
    FGANLoss(name) for name in F_DIVERGENCES
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: f"{loss.name}-{getattr(loss, 'divergence_name', '')}{getattr(loss, 'a', '')}")
def test_gradient_signs(loss):
    """G's loss falls as D(fake) moves toward "real"; D's loss falls as D(real) rises and D(fake) falls."""
    fake = torch.tensor([-0.5], requires_grad=True)
    loss.generator_loss(fake).backward()
    assert float(fake.grad) < 0
    real, fake = torch.tensor([0.3], requires_grad=True), torch.tensor([0.4], requires_grad=True)
    loss.discriminator_loss(real, fake).backward()
    assert float(real.grad) < 0 and float(fake.grad) > 0


def test_minimax_generator_loss_saturates_where_non_saturating_does_not():
    # Goodfellow et al. (2014), sec. 3: when D rejects fakes confidently, log(1 - D) is flat
    fake = torch.tensor([-8.0], requires_grad=True)
    MinimaxLoss().generator_loss(fake).backward()
    saturating = float(fake.grad)
    fake.grad = None
    NonSaturatingLoss().generator_loss(fake).backward()
    assert abs(saturating) < 1e-3 < abs(float(fake.grad))


# -- the registry and the regularisers ---------------------------------------------------------------
def test_the_config_accepts_exactly_the_registered_losses():
    assert set(LOSSES) == set(LOSS_REGISTRY) == {
        "minimax", "non-saturating", "least-squares", "wasserstein", "wasserstein-gp", "hinge", "f-gan"
    }
    for name in LOSSES:
        assert GANConfig(loss=name).loss == name
        assert build_loss(name).name == name
        assert f'"{name}"' in GANConfig.__doc__  # the config's documentation names every loss
    with pytest.raises(ConfigError, match="loss="):
        build_loss("kl")


def test_a_registered_loss_is_a_config_word_and_leaves_with_its_registration():
    with pytest.raises(ConfigError, match="loss="):
        GANConfig(loss="test-identity")

    @register_loss("test-identity")
    class IdentityLoss(MinimaxLoss):
        pass

    try:
        assert IdentityLoss.name == "test-identity" and "test-identity" in LOSSES
        assert isinstance(build_loss("test-identity"), IdentityLoss)
        assert GANConfig(loss="test-identity").loss == "test-identity"
        with pytest.raises(ConfigError, match="registered twice"):
            register_loss("test-identity")(type("OtherLoss", (MinimaxLoss,), {}))
    finally:
        LOSS_REGISTRY.pop("test-identity")
    with pytest.raises(ConfigError, match="loss="):
        GANConfig(loss="test-identity")


def test_each_loss_is_built_with_its_options_and_brings_its_own_regularisers():
    assert build_loss("least-squares", ls_targets=(-1.0, 1.0, 0.0)) == LeastSquaresLoss(-1.0, 1.0, 0.0)
    assert build_loss("f-gan", divergence="pearson").f_divergence is F_DIVERGENCES["pearson"]
    assert build_loss("wasserstein", weight_clip=0.03).regularizers() == (WeightClipping(0.03),)
    wgan_gp = build_loss("wasserstein-gp", gp_weight=2.5)
    assert isinstance(wgan_gp, WassersteinGPLoss) and wgan_gp.regularizers() == (GradientPenalty(2.5),)
    for name in ("minimax", "non-saturating", "least-squares", "hinge", "f-gan"):
        assert build_loss(name).regularizers() == ()
    # R1 and drift are the config's, for any loss; gp_weight's default depends on the data
    config = GANConfig(loss="wasserstein-gp", r1_gamma=4.0, drift_weight=0.01)
    regularizers = config.regularizers(config.build_loss(image=True))
    assert regularizers == (GradientPenalty(10.0), R1Penalty(4.0), DriftPenalty(0.01))
    assert config.regularizers(config.build_loss(image=False))[0] == GradientPenalty(0.1)
    assert R1Penalty(4.0).weight == 2.0  # gamma / 2


def test_the_wasserstein_estimate_and_the_f_divergence_estimate_are_the_losses_own():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -1.0])
    for loss in (WassersteinLoss(), WassersteinGPLoss()):
        assert set(loss.estimates(real, fake)) == {"wasserstein"}
        assert float(loss.estimates(real, fake)["wasserstein"]) == pytest.approx(-float(loss.discriminator_loss(real, fake)))
    loss = FGANLoss("kl")
    assert float(loss.estimates(real, fake)["f_divergence"]) == pytest.approx(float(loss.divergence(real, fake)))
    assert HingeLoss().estimates(real, fake) == {}


def test_r1_penalty_is_the_mean_squared_gradient_at_the_data():
    # D(x) = 1/2 sum_j a_j x_j^2 + w.x has grad a * x + w, so R1's E ||grad||^2 is exact
    torch.manual_seed(0)
    a, w = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.1, -0.2])
    real = torch.randn(6, 3)
    critic = lambda x: 0.5 * (a * x**2).sum(1) + x @ w  # noqa: E731
    expected = ((a * real + w) ** 2).sum(1).mean()
    torch.testing.assert_close(r1_penalty(critic, real), expected)
    # against autograd's Jacobian of the batch, row by row
    jac = torch.autograd.functional.jacobian(critic, real)  # (B, B, D), block-diagonal
    rows = torch.stack([jac[i, i] for i in range(6)])
    torch.testing.assert_close(r1_penalty(critic, real), rows.pow(2).sum(1).mean())
    # differentiable in the critic's parameters
    scale = torch.tensor(2.0, requires_grad=True)
    r1_penalty(lambda x: scale * (x @ w), real).backward()
    assert float(scale.grad) == pytest.approx(2 * 2.0 * float(w.pow(2).sum()), rel=1e-5)


def test_the_regularisers_add_their_terms_and_clip():
    torch.manual_seed(0)
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    critic = nn.Linear(2, 1)
    f = lambda x: critic(x).squeeze(1)  # noqa: E731
    real_out = f(real)
    torch.testing.assert_close(GradientPenalty(3.0).penalty(f, real, fake, real_out), (critic.weight.norm() - 1.0) ** 2)
    torch.testing.assert_close(DriftPenalty(0.1).penalty(f, real, fake, real_out), real_out.pow(2).mean())
    assert WeightClipping(0.01).penalty(f, real, fake, real_out) is None
    with torch.no_grad():
        critic.weight.fill_(0.5)
    WeightClipping(0.01).after_step(critic)
    assert float(critic.weight.detach().abs().max()) == pytest.approx(0.01) and float(critic.bias.detach().abs().max()) <= 0.01
    assert GradientPenalty().per_sample and R1Penalty().per_sample and not DriftPenalty().per_sample
