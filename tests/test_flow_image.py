"""RealNVP and Glow as models: the whole density against the autograd Jacobian, a fit reaching a
known entropy, the bits/dim of uniformly dequantized data against a hand computation, the
variational dequantization bound against the exact discrete probability, and the registry contract
(build, train through genlab.fit, sample on the data's levels, save and load)."""

import math

import pytest
import torch
from torch import distributions as D

import genlab
from genlab.data import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.metrics.report import model_likelihood
from genlab.models.flows.image import Glow, GlowConfig, RealNVP, RealNVPConfig
from genlab.nn.distributions import standard_normal_log_prob

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_IMAGE = {"channels": 4, "blocks": 1}
IMAGE_SPEC = DataSpec("tiny-images", kind="image", shape=(2, 4, 4), value_range=(0.0, 1.0), levels=17)
VECTOR_SPEC = DataSpec("tiny-vectors", kind="vector", shape=(3,), value_range=(-math.inf, math.inf))


def _perturb(model, scale=0.05, seed=0):
    """Parameters moved off their (identity-making) initial values; eval mode (no dropout)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize(
    "model_class, config, spec",
    [
        (RealNVP, RealNVPConfig(couplings_per_scale=1, **TINY_IMAGE), IMAGE_SPEC),
        (Glow, GlowConfig(steps=2, **TINY_IMAGE), IMAGE_SPEC),
        (Glow, GlowConfig(steps=2, preprocessing="center", **TINY_IMAGE), IMAGE_SPEC),
        (RealNVP, RealNVPConfig(couplings=3, hidden=(8,), permutation="random"), VECTOR_SPEC),
        (Glow, GlowConfig(steps=3, hidden=(8,)), VECTOR_SPEC),
    ],
    ids=["realnvp-image", "glow-image", "glow-image-center", "realnvp-vector", "glow-vector"],
)
def test_model_density_is_the_change_of_variables_of_its_whole_map(model_class, config, spec):
    """log p(x) = log N(z) + log|det dz/dx| with z = f(g(x)) the full map (preprocessing, multi-scale
    flow), the Jacobian from autograd; and the map inverts."""
    model = _perturb(model_class(config, spec).double())
    g = torch.Generator().manual_seed(1)
    x = 0.05 + 0.9 * torch.rand(2, *spec.shape, generator=g, dtype=torch.float64)

    def full_map(v):
        u, _ = model.preprocess(v.reshape(1, *spec.shape))
        return model.transform(u)[0].reshape(-1)

    for i in range(2):
        jac = torch.autograd.functional.jacobian(full_map, x[i].reshape(-1))
        expected = standard_normal_log_prob(full_map(x[i])[None]) + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(model.continuous_log_prob(x[i : i + 1])[0], expected[0], rtol=0, atol=1e-8)
    u, _ = model.preprocess(x)
    z, _ = model.transform(u)
    assert z.shape == (2, *model.latent_shape)
    torch.testing.assert_close(model.postprocess(model.transform.inverse(z)[0]), x, rtol=0, atol=1e-10)


def test_realnvp_fit_reaches_the_entropy_of_a_correlated_gaussian():
    """Affine couplings with alternating masks can represent a 2D Gaussian exactly (x_2 | x_1 is
    Gaussian with mean linear in x_1), so the fitted NLL tends to the entropy H. Measured on
    20,000 fresh samples against the true log-density of the same samples (paired), the gap
    estimates KL(p || p_model) >= 0 with a standard error below 0.002 nats; 0.05 nats is the bar."""
    torch.manual_seed(0)
    target = D.MultivariateNormal(torch.tensor([1.0, -2.0]), torch.tensor([[2.0, 1.2], [1.2, 1.0]]))
    spec = DataSpec("gaussian", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
    model = RealNVP(RealNVPConfig(couplings=4, hidden=(32, 32)), spec)
    model.initialize_from_data(_Tensors(target.sample((1024,))), torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        loss = model.loss(Batch(target.sample((256,))))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    x = target.sample((20_000,))
    with torch.no_grad():
        gap = (target.log_prob(x) - model.log_prob(x)).mean().item()
    entropy = target.entropy().item()
    assert -0.01 < gap < 0.05, f"NLL {entropy + gap:.4f} vs entropy {entropy:.4f}"


class _Tensors:
    """The `train` argument of initialize_from_data: anything with tensors() -> (x, y)."""

    def __init__(self, x, y=None):
        self.x, self.y = x, y

    def tensors(self):
        return self.x, self.y


def _identity_flow(spec, **fields):
    """A fresh RealNVP without preprocessing is the identity (zero-initialised couplings, ActNorm
    not yet initialised), so its density is exactly N(0, I) in the data's units."""
    return RealNVP(RealNVPConfig(couplings=2, hidden=(8,), preprocessing="none", **fields), spec).double()


def test_uniform_dequantization_bits_per_dim_match_a_hand_computation():
    """p = N(0, I) on x' = (v + u) / L, u ~ U[0, 1): E[-log p(x')] = sum_i [log(2 pi) / 2 + E[x_i'^2] / 2]
    with E[x'^2] = (v^2 + v + 1/3) / L^2, and bits/dim = (nll + D ln L) / (D ln 2) (value range [0, 1])."""
    levels = 4
    spec = DataSpec("discrete", kind="vector", shape=(3,), value_range=(0.0, 1.0), levels=levels)
    model = _identity_flow(spec)
    v = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    x = (v / (levels - 1)).expand(20_000, 3)  # stored values a + v (b - a) / (L - 1)
    expected_nll = (0.5 * math.log(2 * math.pi) + 0.5 * (v**2 + v + 1 / 3) / levels**2).sum().item()
    expected_bpd = (expected_nll + 3 * math.log(levels)) / (3 * math.log(2))
    report, notes = model_likelihood(model, x, seed=0)
    assert [(n["name"], n["samples"], n["of"]) for n in notes] == [("nll", 20_000, 20_000)]  # cheap: every sample
    # Monte Carlo: the per-sample NLL has a standard deviation below 0.2 nats, so its mean over 20,000 draws is within 0.005
    assert report["nll_nats"] == pytest.approx(expected_nll, abs=0.005)
    assert report["nll_bits_per_dim"] == pytest.approx(expected_bpd, abs=0.005 / (3 * math.log(2)))
    # the training loss reports the same units
    loss = model.loss(Batch(x))
    assert loss.terms["bits_per_dim"].item() == pytest.approx(expected_bpd, abs=0.005)
    # log_prob dequantizes with the generator it is given (a fixed seed otherwise: repeatable)
    g = torch.Generator().manual_seed(3)
    x_dequantized = model.dequantize(x[:5], torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.log_prob(x[:5], generator=g), D.Normal(0.0, 1.0).log_prob(x_dequantized).sum(1))
    assert torch.equal(model.log_prob(x[:5]), model.log_prob(x[:5]))
    assert torch.all((x_dequantized >= v / levels) & (x_dequantized < (v + 1) / levels))


class _UniformDequantizer(torch.nn.Module):
    """q(u|x) = U[0, 1)^D exactly: the variational machinery with the uniform choice."""

    def forward(self, x_unit, context=None, generator=None):
        u = torch.rand(x_unit.shape, generator=generator).to(x_unit.dtype)  # drawn as `dequantize` draws
        return u, x_unit.new_zeros(x_unit.shape[0])


def _discrete_gaussian_spec():
    # wide bins (w = 2) so that the density varies inside a bin and the uniform q is visibly loose
    return DataSpec("wide-bins", kind="vector", shape=(2,), value_range=(-3.0, 3.0), levels=3)


def test_variational_bound_with_a_uniform_q_is_the_uniform_bound():
    spec = _discrete_gaussian_spec()
    uniform = _perturb(_identity_flow(spec), 0.3)
    variational = _identity_flow(spec, dequantization="variational")
    variational.load_state_dict(uniform.state_dict(), strict=False)
    variational.dequantizer = _UniformDequantizer()
    x = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    bound = variational.nll_bound(x, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(bound, -uniform.log_prob(x, generator=torch.Generator().manual_seed(4)))


def test_variational_dequantization_tightens_a_valid_bound():
    """p = N(0, I) on [-3, 3]^2 cut in 3 x 3 bins: P(v) = prod_i [Phi(a + (v_i + 1) w) - Phi(a + v_i w)]
    exactly. Both bounds E_q[-log p(x') + log q] - D log w lie above -log P(v); fitting q(u|x) (the
    density p fixed) brings the variational one closer than the uniform one."""
    spec = _discrete_gaussian_spec()
    torch.manual_seed(0)
    model = _identity_flow(spec, dequantization="variational")
    assert not model.exact_likelihood and model.likelihood_kind() == "dequantized"
    with pytest.raises(NotImplementedError, match="nll_bound"):
        model.log_prob(torch.zeros(1, 2, dtype=torch.float64))
    x = torch.tensor([[-3.0, 0.0], [3.0, 3.0]], dtype=torch.float64).repeat(2000, 1)
    standard = D.Normal(0.0, 1.0)
    edges = -3.0 + 2.0 * torch.round((x + 3.0) / 3.0)  # levels 0, 1, 2 at -3, 0, 3 own [-3, -1), [-1, 1), [1, 3)
    true_nll = -torch.log(standard.cdf(edges + 2.0) - standard.cdf(edges)).sum(1)  # (B,)
    width_term = 2 * math.log(2.0)  # D log w

    def bounds(m):
        with torch.no_grad():
            return m.nll_bound(x, generator=torch.Generator().manual_seed(5)) - width_term

    uniform_gap = (_identity_flow(spec).nll_bound(x, generator=torch.Generator().manual_seed(5)) - width_term - true_nll).mean().item()
    before = (bounds(model) - true_nll).mean().item()
    optimizer = torch.optim.Adam(model.dequantizer.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model.loss(Batch(x[:256]))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    after = (bounds(model) - true_nll).mean().item()
    assert uniform_gap > 0.1  # the uniform q is far from p(x' | v) on such wide bins
    assert 0.0 <= after < 0.5 * uniform_gap, (before, after, uniform_gap)
    # the evaluation reports it as a bound, in bits/dim with the dequantization correction
    report, _ = model_likelihood(model, x[:400], seed=0)
    assert set(report) == {"nll_bound_nats", "nll_bound_bits_per_dim"}
    expected_bpd = (report["nll_bound_nats"] - width_term) / (2 * math.log(2))
    assert report["nll_bound_bits_per_dim"] == pytest.approx(expected_bpd)


def test_initialize_from_data_standardises_the_latent_once():
    spec = DataSpec("gaussian", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
    model = Glow(GlowConfig(steps=2, hidden=(8,)), spec)
    x = torch.randn(512, 2) * torch.tensor([3.0, 0.5]) + 4.0
    model.initialize_from_data(_Tensors(x), torch.Generator().manual_seed(0))
    assert int(model.initialized_from_data) == 1
    with torch.no_grad():
        z, _ = model.transform(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), rtol=0, atol=1e-4)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2), rtol=0, atol=1e-3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialize_from_data(_Tensors(x * 7), torch.Generator().manual_seed(1))  # a resumed run: no change
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "name, data_name, fields",
    [
        ("realnvp", "digits", {"channels": 8, "blocks": 1, "couplings_per_scale": 1}),
        ("glow", "digits", {"channels": 8, "steps": 1}),
        ("realnvp", "moons", {"couplings": 2, "hidden": (8,)}),
        ("glow", "moons", {"steps": 2, "hidden": (8,)}),
        ("realnvp", "digits", {"channels": 8, "blocks": 1, "couplings_per_scale": 1, "dequantization": "variational"}),
    ],
    ids=["realnvp-digits", "glow-digits", "realnvp-moons", "glow-moons", "realnvp-digits-variational"],
)
def test_registry_build_fit_sample_save_load(tmp_path, name, data_name, fields):
    data = genlab.data.load(data_name, **({"n": 300} if data_name == "moons" else {}))
    model = genlab.create(name, data=data, **fields)
    run = genlab.fit(model, data, max_steps=3, batch_size=32, out=tmp_path / "run", progress=False, ema_decay=0, tensorboard=False)
    assert run.step == 3 and int(model.initialized_from_data) == 1
    model.eval()  # conditioner dropout (on by default for images) acts in training only
    assert all(math.isfinite(h["loss"]) for h in run.history if "loss" in h)
    spec = data.spec
    x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, *spec.shape) and torch.isfinite(x).all()
    low, high = spec.value_range
    assert x.min() >= low and x.max() <= high
    if spec.levels is not None:  # on the stored grid a + v (b - a) / (L - 1)
        steps = (x - low) / (high - low) * (spec.levels - 1)
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-5)
    reloaded = genlab.load(tmp_path / "run", ema=False)
    x_test, _ = data.split("test").tensors()
    x_test = x_test[:20].float()
    with torch.no_grad():
        if model.exact_likelihood:
            torch.testing.assert_close(reloaded.log_prob(x_test), model.log_prob(x_test), rtol=0, atol=0)
            assert torch.isfinite(model.log_prob(x_test)).all()
        else:
            g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
            torch.testing.assert_close(reloaded.nll_bound(x_test, generator=g1), model.nll_bound(x_test, generator=g2), rtol=0, atol=0)
    torch.testing.assert_close(
        reloaded.sample(4, generator=torch.Generator().manual_seed(1)), model.sample(4, generator=torch.Generator().manual_seed(1))
    )


def test_class_conditional_flow_uses_the_label():
    spec = DataSpec("tiny-labelled", kind="image", shape=(1, 4, 4), num_classes=3, levels=17)
    model = _perturb(RealNVP(RealNVPConfig(scales=1, class_conditional=True, **TINY_IMAGE), spec), 0.1)
    x = torch.rand(4, 1, 4, 4)
    per_label = [model.log_prob(x, torch.full((4,), k)) for k in range(3)]
    assert not torch.allclose(per_label[0], per_label[1])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a, b = model.sample(4, cond=torch.zeros(4, dtype=torch.long), generator=g()), model.sample(4, cond=2, generator=g())
    assert a.shape == (4, 1, 4, 4) and not torch.equal(a, b)
    # without labels: the marginal under uniform class probabilities, log (1/K) sum_k p(x | k)
    torch.testing.assert_close(model.log_prob(x), torch.logsumexp(torch.stack(per_label), 0) - math.log(3))
    assert model.sample(5, generator=g()).shape == (5, 1, 4, 4)  # labels drawn uniformly
    assert model.loss(Batch(x, torch.tensor([0, 1, 2, 0]))).total.isfinite()


def test_configs_reject_impossible_values():
    with pytest.raises(ConfigError, match="squeezes 3 times and needs height and width divisible by 8 and at least 16"):
        genlab.create("realnvp", data=genlab.data.load("digits"), scales=4)
    with pytest.raises(ConfigError, match="squeezes 4 times and needs height and width divisible by 16 and at least 16; data 'digits' is 8x8"):
        genlab.create("glow", data=genlab.data.load("digits"), scales=4)
    with pytest.raises(ConfigError, match="dequantization"):
        RealNVPConfig(dequantization="gaussian")
    with pytest.raises(ConfigError, match="permutation"):
        GlowConfig(permutation="shuffle")
    with pytest.raises(ConfigError, match="class labels"):
        RealNVP(RealNVPConfig(class_conditional=True), DataSpec("x", kind="vector", shape=(2,)))


def test_conditioner_dropout_acts_in_training_only():
    """Dropout makes the training loss stochastic; in eval mode the flow is a deterministic bijection."""
    model = _perturb(RealNVP(RealNVPConfig(couplings_per_scale=1, dropout=0.5, **TINY_IMAGE), IMAGE_SPEC).double(), 0.1).train()
    x = 0.05 + 0.9 * torch.rand(3, *IMAGE_SPEC.shape, dtype=torch.float64)
    u, _ = model.preprocess(x)
    torch.manual_seed(0)
    assert not torch.equal(model.transform(u)[0], model.transform(u)[0])
    model.eval()
    z, log_det = model.transform(u)
    u_back, inverse_log_det = model.transform.inverse(z)
    torch.testing.assert_close(u_back, u, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_conditioner_dropout_defaults_to_none_under_the_cpu_preset_and_on_vectors(name):
    """None means 0.1 on images, except images the cpu preset sizes (side >= 16) and vectors: 0."""
    mnist_like = DataSpec("mnist-like", kind="image", shape=(1, 28, 28), value_range=(0.0, 1.0), levels=256)
    digits = genlab.data.load("digits").spec
    vectors = DataSpec("toy", kind="vector", shape=(2,))

    def rates(spec, **fields):
        from genlab.nn.conv import ResidualBlock

        return {m.dropout for m in genlab.create(name, data=spec, **fields).modules() if isinstance(m, ResidualBlock)}

    assert rates(mnist_like, preset="cpu") == {0.0}
    assert rates(mnist_like, preset="paper") == rates(digits, preset="cpu") == {0.1}
    assert rates(vectors) <= {0.0}  # MLP conditioners: no residual conv blocks
    assert rates(mnist_like, preset="cpu", dropout=0.2) == {0.2}


def test_noise_padding_gives_glow_odd_sides_and_a_valid_bound():
    """A 5x5 image under one squeeze: padded with one row and one column of e ~ N(0, I) to 6x6.
    -log p(x) <= E_e[-log p_flow(g(x) (+) e) - log|det g'| + log q(e)] (Jensen). An untrained Glow is
    volume preserving and maps N(0, I) to itself (orthogonal 1x1 convolutions, identity couplings,
    ActNorm not yet initialised), so p_flow(u (+) e) = N(u) q(e): the bound is then exact for every
    draw. A perturbed one has a positive gap, which many importance draws of e close from above."""
    spec = DataSpec("odd", kind="image", shape=(1, 5, 5), value_range=(0.0, 1.0))
    model = Glow(GlowConfig(steps=2, scales=1, **TINY_IMAGE), spec).double().eval()
    assert model.noise_padding == (1, 1) and model.latent_shape == (36,) and not model.exact_likelihood
    with pytest.raises(NotImplementedError, match="pads the images with noise"):
        model.log_prob(torch.full((1, 1, 5, 5), 0.5, dtype=torch.float64))
    x = 0.05 + 0.9 * torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u, log_det_logit = model.preprocess(x)
    exact = -(standard_normal_log_prob(u.reshape(3, -1)) + log_det_logit)
    with torch.no_grad():
        for seed in range(3):
            # the 1x1 convolutions were drawn orthogonal in float32: equal to its rounding
            torch.testing.assert_close(model.nll_bound(x, generator=torch.Generator().manual_seed(seed)), exact, rtol=0, atol=1e-5)

    _perturb(model, 0.3)
    with torch.no_grad():
        draws = torch.stack([model.nll_bound(x, generator=torch.Generator().manual_seed(seed)) for seed in range(2000)])  # (K, B)
    assert not torch.allclose(draws[0], draws[1])  # the bound depends on e
    bound = draws.mean(0)
    importance = -(torch.logsumexp(-draws, dim=0) - math.log(len(draws)))  # -log p(x), approached from above
    gap = bound - importance
    assert bool((gap > 0.01).all()), gap
    half = -(torch.logsumexp(-draws[:20], dim=0) - math.log(20))
    assert bool((half >= importance - 1e-6).all())  # more draws: a tighter estimate (in expectation; by far here)

    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 5, 5) and float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0


def test_noise_padding_is_refused_where_asked_and_where_the_side_is_too_small():
    spec = DataSpec("odd", kind="image", shape=(1, 25, 25), value_range=(0.0, 1.0), levels=256)
    assert Glow(GlowConfig(steps=1, **TINY_IMAGE), spec).noise_padding == (3, 3)  # 25 -> 28 for scales=2
    with pytest.raises(ConfigError, match=r"resize=24, or --set padding=noise"):
        Glow(GlowConfig(steps=1, padding="none", **TINY_IMAGE), spec)
    with pytest.raises(ConfigError, match="padding"):
        GlowConfig(padding="zeros")
