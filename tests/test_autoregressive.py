"""MADE, PixelCNN and gated PixelCNN against the mathematics: causality by gradients, probabilities that
sum to one over every configuration, conditionals against torch.distributions and scipy, samples whose
frequencies match the model's own probabilities, a fit that reaches a known entropy, and the registry."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as dist
from torch.autograd.functional import jacobian

import genlab
from genlab.data import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.metrics.report import likelihood_metrics
from genlab.models.autoregressive import (
    DiscretizedLogisticMixture,
    GatedPixelCNN,
    GatedPixelCNNConfig,
    GaussianMixtureOutput,
    MADEConfig,
    MADEModel,
    PixelCNN,
    PixelCNNConfig,
)

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_MODELS = [(PixelCNN, PixelCNNConfig), (GatedPixelCNN, GatedPixelCNNConfig)]


def levels_to_data(values: torch.Tensor, levels: int) -> torch.Tensor:
    return values.double() / (levels - 1)  # value_range (0, 1)


def all_configurations(levels: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Every array of `shape` over {0..levels-1}: (levels^D, *shape) long."""
    d = math.prod(shape)
    grids = torch.cartesian_prod(*[torch.arange(levels)] * d).reshape(-1, d)
    return grids.reshape(-1, *shape)


def tiny_image_model(cls, config_cls, shape, levels, *, output="categorical", num_classes=None, blocks=2, width=4, sharpen=6.0, seed=0, **fields):
    torch.manual_seed(seed)
    spec = DataSpec("tiny", kind="image", shape=shape, levels=levels, num_classes=num_classes)
    c = shape[0]
    config = config_cls(
        channels=width * c, blocks=blocks, kernel_size=3, first_kernel_size=3, head_channels=2 * width * c,
        output=output, components=2, class_conditional=num_classes is not None, **fields,
    )  # fmt: skip
    model = cls(config, spec).double().eval()
    with torch.no_grad():  # peaky conditionals that depend strongly on the earlier pixels
        for p in model.parameters():
            p.mul_(sharpen ** (1 / 3))
        first = model.first if isinstance(model, PixelCNN) else model.layers[0]
        for p in first.parameters():
            p.mul_(sharpen)
        for name, p in model.named_parameters():
            if "cond" in name or "class_bias" in name:  # labels that matter
                p.mul_(sharpen)
    return model


def tiny_made(levels=3, features=3, *, output="auto", order="random", num_masks=1, num_classes=None, sharpen=6.0, seed=0):
    torch.manual_seed(seed)
    spec = DataSpec("tiny", kind="vector", shape=(features,), levels=levels, num_classes=num_classes)
    config = MADEConfig(hidden=(24, 24), activation="tanh", output=output, components=2, order=order,
                        num_masks=num_masks, class_conditional=num_classes is not None, seed=seed)  # fmt: skip
    model = MADEModel(config, spec).double().eval()
    with torch.no_grad():  # peaky conditionals that depend strongly on the earlier variables
        for p in model.parameters():
            p.mul_(sharpen ** 0.5)
    return model


# -- causality of the image models ------------------------------------------------------------------
def conditional_gradients(model, shape, draws=4):
    """|d params(c, i, j) / d x| summed over a few random inputs and projections: (C, H, W, C, H, W)."""
    C, H, W = shape
    g = torch.Generator().manual_seed(1)
    total = torch.zeros(C, H, W, C, H, W, dtype=torch.double)
    for _ in range(draws):
        x = torch.rand(1, *shape, generator=g, dtype=torch.double) * 2 - 1
        w = torch.randn(model.output.params_per_dim, generator=g, dtype=torch.double)
        total += jacobian(lambda v: (model.conditionals(v, None)[0] * w).sum(-1), x)[:, :, :, 0].abs()
    return total


def later_or_same(i, j, c, shape):
    """(C, H, W) bool: positions at or after (i, j, c) in raster order, colours innermost."""
    C, H, W = shape
    ii = torch.arange(H)[None, :, None].expand(C, H, W)
    jj = torch.arange(W)[None, None, :].expand(C, H, W)
    cc = torch.arange(C)[:, None, None].expand(C, H, W)
    return (ii > i) | ((ii == i) & (jj > j)) | ((ii == i) & (jj == j) & (cc >= c))


@pytest.mark.parametrize("cls,config_cls", IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 4)])
def test_image_conditionals_depend_only_on_earlier_pixels_and_colours(cls, config_cls, shape):
    model = tiny_image_model(cls, config_cls, shape, levels=4, blocks=3, width=8, sharpen=1.0)
    grads = conditional_gradients(model, shape)
    C, H, W = shape
    for c in range(C):
        for i in range(H):
            for j in range(W):
                assert (grads[c, i, j][later_or_same(i, j, c, shape)] == 0).all(), (c, i, j)
    assert (grads[0, 2, 2][~later_or_same(2, 2, 0, shape)] != 0).any()
    if C == 3:  # within the pixel: B reads R and G, G reads R
        assert grads[2, 1, 1, 0, 1, 1] != 0 and grads[2, 1, 1, 1, 1, 1] != 0 and grads[1, 1, 1, 0, 1, 1] != 0


def test_dilated_pixelcnn_is_causal_and_sees_further_up():
    """Dilated blocks keep every conditional on earlier pixels only, and widen the view: with a 3x3
    type-A layer and three 3x3 blocks a pixel reads 4 rows up undilated, 1 + 1 + 2 + 4 = 8 with
    dilations (1, 2, 4)."""
    shape = (1, 10, 5)
    reach = {}
    for dilations in [(1,), (1, 2, 4)]:
        model = tiny_image_model(PixelCNN, PixelCNNConfig, shape, levels=4, blocks=3, width=8, sharpen=1.0, dilations=dilations)
        grads = conditional_gradients(model, shape)
        for i in range(10):
            for j in range(5):
                assert (grads[0, i, j][later_or_same(i, j, 0, shape)] == 0).all(), (dilations, i, j)
        rows_read = grads[0, 9, 2].sum(dim=(0, 2)).nonzero()[:, 0]  # rows the last row's pixel reads
        reach[dilations] = 9 - int(rows_read.min())
    assert reach == {(1,): 4, (1, 2, 4): 8}


def test_gated_pixelcnn_has_no_blind_spot_where_pixelcnn_has_one():
    """With 3x3 kernels, the pixel one row up and two columns right, (i-1, j+2), is never seen by the
    masked-convolution PixelCNN (the blind spot) but reaches the gated PixelCNN through its vertical
    stack; the pixel up and to the right, (i-1, j+1), reaches both."""
    shape = (1, 5, 5)
    plain = conditional_gradients(tiny_image_model(PixelCNN, PixelCNNConfig, shape, 4, blocks=3, width=8, sharpen=1.0), shape)
    gated = conditional_gradients(tiny_image_model(GatedPixelCNN, GatedPixelCNNConfig, shape, 4, blocks=3, width=8, sharpen=1.0), shape)
    i, j = 3, 1
    assert plain[0, i, j, 0, i - 1, j + 2] == 0 and gated[0, i, j, 0, i - 1, j + 2] != 0
    assert plain[0, i, j, 0, i - 1, j + 1] != 0 and gated[0, i, j, 0, i - 1, j + 1] != 0
    # deep enough, the gated model reads every earlier pixel
    assert (gated[0, 4, 4][~later_or_same(4, 4, 0, shape)] != 0).all()


@pytest.mark.parametrize("cls,config_cls", IMAGE_MODELS)
def test_sampling_on_the_rows_so_far_gives_the_full_image_conditionals(cls, config_cls):
    """Sampling runs the network on rows 0..i only; that must equal the full pass on those rows."""
    model = tiny_image_model(cls, config_cls, (3, 5, 4), levels=5)
    values = torch.randint(0, 5, (2, 3, 5, 4), generator=torch.Generator().manual_seed(0))
    full = model.network(values, None)
    for i in range(5):
        torch.testing.assert_close(model.network(values[:, :, : i + 1], None), full[:, :, : i + 1])


# -- likelihoods: normalisation and direct evaluation -------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: tiny_made(levels=3, output="categorical"),
        lambda: tiny_made(levels=2, output="categorical", features=4),  # Bernoulli
        lambda: tiny_made(levels=4, output="logistic_mixture"),
        lambda: tiny_made(levels=3, num_masks=3),  # ensemble of orderings
        lambda: tiny_made(levels=3, num_classes=2),  # marginal over the labels
        lambda: tiny_image_model(PixelCNN, PixelCNNConfig, (1, 2, 2), 3),
        lambda: tiny_image_model(GatedPixelCNN, GatedPixelCNNConfig, (3, 1, 2), 2),
        lambda: tiny_image_model(GatedPixelCNN, GatedPixelCNNConfig, (1, 2, 2), 3, output="logistic_mixture", num_classes=3),
    ],
    ids=["made", "made-bernoulli", "made-logistic", "made-masks", "made-labels", "pixelcnn", "gated-rgb", "gated-logistic-labels"],
)
def test_probabilities_of_all_configurations_sum_to_one(make):
    model = make()
    levels, shape = model.spec.levels, model.spec.shape
    x = levels_to_data(all_configurations(levels, shape), levels)
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob(x), dim=0)
    assert abs(float(total)) < 1e-9


def test_made_log_prob_is_the_sum_of_categorical_log_probs():
    model = tiny_made(levels=5, features=4)
    v = torch.randint(0, 5, (7, 4), generator=torch.Generator().manual_seed(0))
    params = model.made(2.0 * v.double() / 4 - 1.0)  # (B, D, L)
    expected = dist.Categorical(logits=params).log_prob(v).sum(-1)
    torch.testing.assert_close(model.log_prob(levels_to_data(v, 5)), expected)


@pytest.mark.parametrize("cls,config_cls", IMAGE_MODELS)
def test_pixelcnn_log_prob_is_the_sum_of_categorical_log_probs(cls, config_cls):
    model = tiny_image_model(cls, config_cls, (3, 3, 3), levels=6)
    v = torch.randint(0, 6, (4, 3, 3, 3), generator=torch.Generator().manual_seed(0))
    logits = model.conditionals(2.0 * v.double() / 5 - 1.0, None)  # (B, C, H, W, L)
    expected = dist.Categorical(logits=logits).log_prob(v).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(levels_to_data(v, 6)), expected)


def test_discretized_logistic_mixture_matches_cdf_differences_and_sums_to_one():
    levels, K = 7, 3
    output = DiscretizedLogisticMixture(levels, K)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(5, 3 * K, generator=g, dtype=torch.double)
    params[0, K:2 * K] = torch.tensor([-4.0, 0.3, 5.0])  # means far outside [-1, 1]
    params[1, 2 * K:] = -6.0  # narrow components
    probs = output.probabilities(params)  # (5, L)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, dtype=torch.double))
    logits, means, log_scales = params.chunk(3, dim=-1)
    weights = torch.softmax(logits, -1).numpy()
    edges = np.concatenate([[-np.inf], np.linspace(-1, 1, levels)[:-1] + 1 / (levels - 1), [np.inf]])
    for b in range(5):
        expected = np.zeros(levels)
        for k in range(K):
            cdf = stats.logistic.cdf(edges, loc=float(means[b, k]), scale=math.exp(float(log_scales[b, k])))
            expected += weights[b, k] * np.diff(cdf)
        np.testing.assert_allclose(probs[b].numpy(), expected, rtol=1e-7, atol=1e-12)


def test_discretized_logistic_tails_are_finite_with_gradients():
    output = DiscretizedLogisticMixture(256, 1)
    params = torch.tensor([[0.0, 30.0, -7.0], [0.0, -30.0, -7.0], [0.0, 0.999, -7.0]], requires_grad=True)
    log_p = output.log_prob(params, torch.tensor([0, 255, 128]))
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()
    assert log_p[2] < -50  # a narrow bump at the top puts almost nothing in a middle bin


def test_gaussian_mixture_output_matches_torch_distributions():
    output = GaussianMixtureOutput(4)
    params = torch.randn(6, 12, dtype=torch.double)
    x = torch.randn(6, dtype=torch.double)
    logits, means, log_scales = params.chunk(3, -1)
    mixture = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(means, log_scales.exp()))
    torch.testing.assert_close(output.log_prob(params, x), mixture.log_prob(x))


def test_made_density_on_continuous_vectors_integrates_to_one():
    """Gaussian-mixture conditionals on standardised data: the density in the data's units (with the
    standardisation's Jacobian) integrates to 1 over the plane."""
    torch.manual_seed(0)
    spec = DataSpec("plane", kind="vector", shape=(2,), value_range=(-4.0, 4.0))
    model = MADEModel(MADEConfig(hidden=(16,), components=3, num_masks=3), spec).double().eval()  # an ensemble
    with torch.no_grad():
        model.data_mean.copy_(torch.tensor([1.0, -0.5]))
        model.data_std.copy_(torch.tensor([2.0, 0.5]))
    u = torch.linspace(-25, 25, 501, dtype=torch.double)
    v = torch.linspace(-10, 9, 501, dtype=torch.double)
    grid = torch.cartesian_prod(u, v)
    with torch.no_grad():
        density = model.log_prob(grid).exp().reshape(501, 501)
    area = torch.trapezoid(torch.trapezoid(density, v, dim=1), u)
    assert abs(float(area) - 1.0) < 2e-3
    assert model.likelihood_kind() == "continuous"
    with pytest.raises(ConfigError, match="gaussian_mixture"):
        MADEModel(MADEConfig(output="categorical"), spec)


# -- sampling agrees with log_prob ---------------------------------------------------------------------
def dependence(probs: torch.Tensor, levels: int, d: int) -> float:
    """TV(p, product of p's marginals): how much the variables depend on each other under p."""
    joint = probs.reshape([levels] * d)
    product = torch.ones_like(joint)
    for k in range(d):
        shape = [1] * d
        shape[k] = levels
        product = product * joint.sum(dim=[a for a in range(d) if a != k]).reshape(shape)
    return 0.5 * float((joint - product).abs().sum())


def empirical_vs_model(model, n, cond=None):
    """Total-variation distance between the frequencies of n samples and exp(log_prob) over all
    configurations, and the model's probabilities (levels^D,)."""
    levels, shape = model.spec.levels, model.spec.shape
    configs = all_configurations(levels, shape)
    with torch.no_grad():
        samples = model.sample(n, cond=cond, generator=torch.Generator().manual_seed(0))
        probs = model.log_prob(levels_to_data(configs, levels), cond=None if cond is None else cond.expand(len(configs))).exp()
    v = torch.round(samples * (levels - 1)).long().reshape(n, -1)
    index = (v * levels ** torch.arange(v.shape[1] - 1, -1, -1)).sum(1)  # configs are in base-L order
    freq = torch.bincount(index, minlength=len(configs)).double() / n
    return 0.5 * float((freq - probs).abs().sum()), probs


@pytest.mark.parametrize(
    "make",
    [
        lambda: tiny_made(levels=3),
        lambda: tiny_made(levels=4, output="logistic_mixture"),
        lambda: tiny_made(levels=3, num_masks=2),
        lambda: tiny_image_model(PixelCNN, PixelCNNConfig, (1, 2, 2), 3),
        lambda: tiny_image_model(GatedPixelCNN, GatedPixelCNNConfig, (3, 1, 2), 2, output="logistic_mixture"),
    ],
    ids=["made-random-order", "made-logistic", "made-masks", "pixelcnn", "gated-rgb-logistic"],
)
def test_sample_frequencies_match_the_model_probabilities(make):
    model = make()
    distance, probs = empirical_vs_model(model, 20_000)
    assert distance < 0.03
    # the variables depend on each other far beyond the tolerance, so a sampler that ignored the
    # earlier values (or took them in another order) would fail
    assert dependence(probs, model.spec.levels, model.spec.dim) > 0.1


def test_conditional_sampling_matches_the_conditional_probabilities():
    model = tiny_image_model(GatedPixelCNN, GatedPixelCNNConfig, (1, 2, 2), 3, num_classes=3)
    conditionals = []
    for label in range(3):
        distance, probs = empirical_vs_model(model, 20_000, cond=torch.tensor([label]))
        assert distance < 0.03
        conditionals.append(probs)
    assert 0.5 * float((conditionals[0] - conditionals[1]).abs().sum()) > 0.1  # the label matters


def test_the_same_generator_gives_the_same_samples():
    model = tiny_image_model(PixelCNN, PixelCNNConfig, (1, 3, 3), 5)
    a = model.sample(4, generator=torch.Generator().manual_seed(3))
    b = model.sample(4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


# -- fitting ------------------------------------------------------------------------------------------
def test_made_fit_on_a_known_joint_reaches_its_entropy():
    """Minimising the exact cross-entropy sum_x p(x) (-log q(x)) over a 3-variable joint drives it to H(p)."""
    levels, features = 3, 3
    torch.manual_seed(0)
    p = torch.distributions.Dirichlet(torch.full((levels**features,), 0.7, dtype=torch.double)).sample()
    entropy = float(-(p * p.log()).sum())
    spec = DataSpec("joint", kind="vector", shape=(features,), levels=levels)
    model = MADEModel(MADEConfig(hidden=(64, 64), order="random", num_masks=1), spec).double()
    x = levels_to_data(all_configurations(levels, (features,)), levels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        cross_entropy = -(p * model.log_prob(x)).sum()
        optimizer.zero_grad()
        cross_entropy.backward()
        optimizer.step()
    gap = float(cross_entropy.detach()) - entropy
    assert 0 <= gap < 0.02, (float(cross_entropy), entropy)


def test_class_conditional_made_learns_what_each_label_means():
    """Label y makes every coordinate equal to y: after a short fit, sample(cond=y) gives that pattern."""
    torch.manual_seed(0)
    spec = DataSpec("pattern", kind="vector", shape=(4,), levels=4, num_classes=4)
    model = MADEModel(MADEConfig(hidden=(32,), class_conditional=True, num_masks=1), spec)
    y = torch.arange(4).repeat(32)
    x = levels_to_data(y[:, None].expand(-1, 4), 4).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        loss = model.loss(Batch(x, y)).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for label in range(4):
        samples = model.sample(50, cond=torch.tensor(label), generator=torch.Generator().manual_seed(label))
        assert (torch.round(samples * 3) == label).all(1).float().mean() > 0.9
    with pytest.raises(ConfigError, match="labels in"):
        model.sample(2, cond=torch.tensor([0, 7]))


# -- the registry, the engine, save and load -------------------------------------------------------------
TINY = {
    "made": {"hidden": (32,)},
    "pixelcnn": {"channels": 8, "blocks": 1, "head_channels": 8},
    "gated-pixelcnn": {"channels": 8, "blocks": 1, "head_channels": 8, "output": "logistic_mixture"},
}


@pytest.fixture(scope="module")
def digits():
    return genlab.data.load("digits")


@pytest.mark.parametrize("name", sorted(TINY))
def test_registry_fit_sample_save_load_on_digits(name, digits, tmp_path):
    model = genlab.create(name, data=digits, **TINY[name])
    assert type(model).exact_likelihood and model.likelihood_kind() == "discrete"
    run = genlab.fit(model, digits, max_steps=3, batch_size=16, out=tmp_path / name, progress=False, tensorboard=False, sample_every=0)
    trained = run.sampling_model.eval()
    samples = trained.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8)
    on_levels = samples * 16
    torch.testing.assert_close(on_levels, torch.round(on_levels))  # digits' 17 levels
    assert samples.min() >= 0 and samples.max() <= 1
    x, _ = digits.test.tensors()
    x = x[:8]
    loaded = genlab.load(tmp_path / name)
    with torch.no_grad():
        expected = trained.log_prob(x)
        torch.testing.assert_close(loaded.log_prob(x), expected)
    # evaluation reports a discrete NLL: bits/dim = -log P / (D ln 2), no dequantization correction
    report = likelihood_metrics(expected, digits.spec, exact=True, kind=loaded.likelihood_kind())
    assert report["nll_bits_per_dim"] == pytest.approx(float(-expected.mean()) / (64 * math.log(2)), rel=1e-6)


@pytest.mark.parametrize("name", ["pixelcnn", "gated-pixelcnn"])
def test_class_conditional_pixelcnn_on_digits(name, digits):
    model = genlab.create(name, data=digits, class_conditional=True, **TINY[name])
    x, y = digits.train.tensors()
    model.initialize_from_data(digits.train, torch.Generator().manual_seed(0))
    assert torch.allclose(model.class_log_prior.exp().sum(), torch.tensor(1.0))
    loss = model.loss(Batch(x[:16], y[:16]))
    loss.total.backward()
    model.eval()
    a = model.sample(4, cond=torch.full((4,), 1), generator=torch.Generator().manual_seed(0))
    b = model.sample(4, cond=torch.full((4,), 7), generator=torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (4, 1, 8, 8) and not torch.equal(a, b)
    with torch.no_grad():  # log p(x) = log sum_y p(y) p(x | y)
        per_class = torch.stack([model.log_prob(x[:3], cond=torch.full((3,), k)) for k in range(10)], 1)
        torch.testing.assert_close(model.log_prob(x[:3]), torch.logsumexp(per_class + model.class_log_prior, 1))
    with pytest.raises(ConfigError, match="no labels"):
        model.loss(Batch(x[:4]))


def test_configs_fail_with_the_fix():
    spec = DataSpec("toy", kind="vector", shape=(3,), levels=4)
    with pytest.raises(ConfigError, match="'made'"):
        PixelCNN(PixelCNNConfig(), spec)
    with pytest.raises(ConfigError, match="multiple of 6"):
        PixelCNN(PixelCNNConfig(channels=16), DataSpec("rgb", kind="image", shape=(3, 4, 4), levels=256))
    with pytest.raises(ConfigError, match="odd"):
        PixelCNNConfig(kernel_size=4)
    with pytest.raises(ConfigError, match=r"dilations=\(0,\) must be one or more integers >= 1"):
        PixelCNNConfig(dilations=(0,))
    with pytest.raises(ConfigError, match="no dilation"):
        GatedPixelCNNConfig(dilations=(1, 2))
    with pytest.raises(ConfigError, match="output"):
        GatedPixelCNNConfig(output="gaussian_mixture")
    with pytest.raises(ConfigError, match="no labels"):
        MADEModel(MADEConfig(class_conditional=True), spec)
    with pytest.raises(ConfigError, match="order"):
        MADEConfig(order="sideways")
