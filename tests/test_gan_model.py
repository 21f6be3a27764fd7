"""The GAN model and its nets against their definitions: n_critic and TTUR in the shared step,
weight clipping, sampling from the EMA generator, the training diagnostics and warnings, feature
matching, the projection discriminator, minibatch discrimination, spectral norm (largest singular
value 1), progressive growing's fade-in, pixel norm, minibatch standard deviation, the truncation
trick, a short fit that learns the data's spread; a loss, a regulariser and a network kind
registered outside the model's file train through the same step; the presets are written out."""

import ast
import contextlib
import inspect
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import genlab
from genlab.data import Batch, DataSpec, array_dataset
from genlab.errors import ConfigError
from genlab.models.gan import GAN, GANConfig, GANTrainingWarning
from genlab.models.gan import model as gan_model
from genlab.models.gan.losses import LOSS_REGISTRY, LOSSES, DiscriminatorRegularizer, HingeLoss, register_loss
from genlab.models.gan.nets import (
    NETWORK_KINDS,
    MLPDiscriminatorTrunk,
    MLPGenerator,
    NetworkKind,
    register_network_kind,
    MinibatchDiscrimination,
    MinibatchStdDev,
    PixelNorm,
    ProgressiveDiscriminatorTrunk,
    ProgressiveGenerator,
    SelfAttention2d,
    apply_spectral_norm,
)

pytestmark = pytest.mark.usefixtures("one_thread")

VECTORS = DataSpec("toy", kind="vector", shape=(2,), value_range=(-10.0, 10.0), num_classes=3)
IMAGES = DataSpec("toy-images", kind="image", shape=(1, 8, 8), value_range=(0.0, 1.0))
TINY = dict(hidden=(16,), latent_dim=4)


def toy_data(n=256, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    x = np.stack([2.0 * g.standard_normal(n) + y, 0.5 * g.standard_normal(n)], 1).astype(np.float32)
    return array_dataset(x, y, name="toy")


def fit(model, data, steps, **options):
    options = {"batch_size": 32, "progress": False, "ema_decay": 0.0, **options}
    return genlab.fit(model, data, max_steps=steps, **options)


def parameters(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module):
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v)}


# -- the shared step ------------------------------------------------------------------------------------
def test_n_critic_discriminator_steps_per_generator_step():
    data = toy_data()
    torch.manual_seed(0)
    model = genlab.create("wgan-gp", data=data, n_critic=3, **TINY)
    g0, d0 = parameters(model.generator), parameters(model.discriminator)
    fit(model, data, 2)  # two critic iterations, no generator step yet
    assert not changed(g0, model.generator)
    # every critic weight moves but the last bias, which cancels in E D(x) - E D(G(z))
    assert changed(d0, model.discriminator) == set(d0) - {"head.linear.bias"}
    d2 = parameters(model.discriminator)
    fit(model, data, 3)  # the third engine step: a critic step and the first generator step
    assert changed(g0, model.generator) == set(g0)
    assert changed(d2, model.discriminator) == set(d2) - {"head.linear.bias"}


def test_two_optimizers_with_their_own_learning_rates():
    model = genlab.create("sagan", data=IMAGES, channels=(8, 16))
    optimizers = model.configure_optimizers(lr=1e-3)
    assert set(optimizers) == {"generator", "discriminator"}
    assert optimizers["generator"].param_groups[0]["lr"] == 1e-4  # SAGAN's TTUR
    assert optimizers["discriminator"].param_groups[0]["lr"] == 4e-4
    assert optimizers["generator"].param_groups[0]["betas"] == (0.0, 0.9)
    ids = {name: {id(p) for group in opt.param_groups for p in group["params"]} for name, opt in optimizers.items()}
    assert ids["generator"] == {id(p) for p in model.generator.parameters()}
    assert ids["discriminator"] == {id(p) for p in model.discriminator.parameters()}
    assert ids["generator"].isdisjoint(ids["discriminator"])
    # None takes the training lr; WGAN's RMSprop
    assert genlab.create("gan", data=VECTORS).configure_optimizers(lr=3e-3)["generator"].param_groups[0]["lr"] == 3e-3
    assert isinstance(genlab.create("wgan", data=VECTORS).configure_optimizers(lr=1e-3)["discriminator"], torch.optim.RMSprop)


def test_weight_clipping_bounds_every_critic_weight():
    data = toy_data()
    model = genlab.create("wgan", data=data, weight_clip=0.005, **TINY)
    fit(model, data, 2, lr=0.1)
    values = torch.cat([p.detach().flatten() for p in model.discriminator.parameters()])
    assert float(values.abs().max()) == pytest.approx(0.005)  # at the bound, not beyond


def test_gradient_penalty_and_drift_terms_are_logged_for_the_losses_that_use_them():
    data = toy_data()
    run = fit(genlab.create("wgan-gp", data=data, **TINY), data, 1, log_every=1)
    assert {"gradient_penalty", "wasserstein", "g_loss", "d_acc_real", "diversity"} <= set(run.history[0])
    run = fit(genlab.create("gan", data=data, **TINY), data, 1, log_every=1)
    assert "gradient_penalty" not in run.history[0] and "wasserstein" not in run.history[0]


def test_instance_noise_decays_linearly():
    model = GAN(GANConfig(instance_noise=0.2, instance_noise_steps=100, **TINY), VECTORS)
    assert [model.instance_noise_std(s) for s in (0, 50, 100, 200)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    assert GAN(GANConfig(instance_noise=0.2, **TINY), VECTORS).instance_noise_std(10_000) == 0.2


def test_sampling_uses_the_ema_generator():
    data = toy_data()
    torch.manual_seed(0)
    run = fit(genlab.create("gan", data=data, **TINY), data, 5, ema_decay=0.5, lr=1e-2)
    ema = run.sampling_model
    assert ema is run.ema
    trained, averaged = dict(run.model.generator.named_parameters()), dict(ema.generator.named_parameters())
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)
    z = ema.latent(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ema.from_model_space(ema.generator(z))
    torch.testing.assert_close(ema.sample(6, generator=torch.Generator().manual_seed(3)), expected)
    assert not torch.allclose(run.model.sample(6, generator=torch.Generator().manual_seed(3)), expected)


# -- diagnostics -------------------------------------------------------------------------------------------
def test_diagnostics_accuracy_and_collapse():
    model = GAN(GANConfig(**TINY), VECTORS)
    real = torch.randn(8, 2)
    collapsed = torch.zeros(8, 2) + 0.3
    terms = model._discriminator_terms(torch.tensor([2.0, 1.0, -1.0, 3.0]), torch.tensor([-2.0, 0.5, -1.0, -3.0]), real, collapsed)
    assert float(terms["d_acc_real"]) == 0.75 and float(terms["d_acc_fake"]) == 0.75
    assert float(terms["diversity"]) == 0.0 and float(terms["collapse"]) == 1.0 and float(terms["d_overpowers"]) == 0.0
    terms = model._discriminator_terms(torch.full((4,), 5.0), torch.full((4,), -5.0), real, real.flip(0))
    assert float(terms["diversity"]) == pytest.approx(1.0) and float(terms["d_overpowers"]) == 1.0
    # a critic has no threshold: split at the midpoint of the means
    wgan = GAN(GANConfig(loss="wasserstein", **TINY), VECTORS)
    terms = wgan._discriminator_terms(torch.tensor([10.0, 11.0]), torch.tensor([9.0, 12.0]), real, real)
    assert float(terms["d_acc_real"]) == 0.5 and float(terms["wasserstein"]) == 0.0
    # and a critic that separates the sets is not "overpowering": its gradients do not vanish
    terms = wgan._discriminator_terms(torch.full((4,), 5.0), torch.full((4,), -5.0), real, real)
    assert float(terms["d_acc_real"]) == 1.0 and float(terms["d_acc_fake"]) == 1.0 and "d_overpowers" not in terms


def test_monitor_warns_once_per_interval_after_warm_up():
    monitor = gan_model.TrainingMonitor()
    flags = {"d_overpowers": torch.tensor(1.0), "collapse": torch.tensor(0.0)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(2 * gan_model.WARN_EVERY):
            monitor.update(flags, step)
    messages = [str(w.message) for w in caught if issubclass(w.category, GANTrainingWarning)]
    assert len(messages) == 2 and all("overpowers" in m for m in messages)
    # the first check after the warm-up, then WARN_EVERY later
    assert monitor.last_warned["d_overpowers"] == gan_model.WARMUP_STEPS - 1 + gan_model.WARN_EVERY
    monitor.update({"collapse": torch.tensor(0.0)}, 0)  # a critic's terms have no "d_overpowers"


def test_a_collapsed_generator_is_flagged_in_the_logged_terms():
    data = toy_data()
    model = genlab.create("gan", data=data, **TINY)
    with torch.no_grad():  # G(z) = constant: every sample the same point (until G's first step)
        model.generator.trunk.net.net[-1].weight.zero_()
    run = fit(model, data, 1, log_every=1)
    assert run.history[0]["collapse"] == 1.0 and run.history[0]["diversity"] == 0.0


# -- options from the literature ----------------------------------------------------------------------------
def test_feature_matching_loss_is_the_squared_distance_of_mean_features():
    model = GAN(GANConfig(feature_matching=True, **TINY), VECTORS)
    real, fake = torch.randn(6, 2), torch.randn(6, 2) + 1.0
    phi = model.discriminator.trunk
    expected = ((phi(real).mean(0) - phi(fake).mean(0)) ** 2).sum()
    torch.testing.assert_close(model.feature_matching_loss(real, fake), expected)


def test_feature_matching_trains_the_generator():
    data = toy_data()
    model = genlab.create("gan", data=data, feature_matching=True, **TINY)
    g0 = parameters(model.generator)
    fit(model, data, 1)
    assert changed(g0, model.generator) == set(g0)


def test_projection_discriminator_is_linear_plus_inner_product_with_the_label_embedding():
    model = GAN(GANConfig(class_conditional=True, **TINY), VECTORS)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    phi = model.discriminator.trunk(x)
    head = model.discriminator.head
    expected = (phi @ head.linear.weight.T).squeeze(1) + head.linear.bias + (head.projection.embedding.weight[y] * phi).sum(1)
    torch.testing.assert_close(model.discriminate(x, y), expected)


def test_conditional_sampling_takes_labels_and_checks_them():
    model = genlab.create("cgan", data=toy_data(), **TINY)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a, b = model.sample(4, cond=torch.tensor(0), generator=g()), model.sample(4, cond=torch.tensor(2), generator=g())
    assert not torch.allclose(a, b)  # the same z, other labels
    with pytest.raises(ConfigError, match="labels in"):
        model.sample(4, cond=torch.tensor([0, 1, 5, 1]))
    with pytest.raises(ConfigError, match="unconditional"):
        genlab.create("gan", data=toy_data(), **TINY).sample(2, cond=torch.tensor(1))


def test_minibatch_discrimination_matches_its_definition():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(3, kernels=4, kernel_dim=2)
    f = torch.randn(5, 3)
    m = (f @ layer.T).reshape(5, 4, 2)
    o = torch.zeros(5, 4)
    for i in range(5):
        for j in range(5):
            if i != j:
                o[i] += torch.exp(-(m[i] - m[j]).abs().sum(-1))
    torch.testing.assert_close(layer(f), torch.cat([f, o], 1))


def test_spectral_norm_makes_the_largest_singular_value_one():
    torch.manual_seed(0)
    net = apply_spectral_norm(nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Conv2d(1, 4, 3)))
    linear, conv = net[0], net[2]
    for _ in range(30):  # one power iteration per training forward pass
        linear(torch.randn(2, 6))
        conv(torch.randn(2, 1, 5, 5))
    for layer in (linear, conv):
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=1e-4)
        assert float(torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach().flatten(1), ord=2)) != pytest.approx(1.0, abs=1e-2)


def test_sagan_attention_starts_as_the_identity():
    block = SelfAttention2d(8)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x), x)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    assert not torch.allclose(block(x), x)


def test_truncation_bounds_the_latents_and_keeps_the_truncated_normal():
    model = GAN(GANConfig(latent_dim=8, truncation=0.5, hidden=(16,)), VECTORS)
    z = model.latent(20_000, torch.Generator().manual_seed(0), truncation=0.5)
    assert float(z.abs().max()) <= 0.5 and float(z.norm(dim=1).max()) <= 0.5 * math.sqrt(8)
    assert float(z.var()) == pytest.approx(stats.truncnorm(-0.5, 0.5).var(), rel=0.02)
    assert float(model.latent(20_000, torch.Generator().manual_seed(0)).abs().max()) > 3.0  # untruncated
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)


# -- progressive growing -----------------------------------------------------------------------------------
def test_progressive_generator_fades_in_the_new_level():
    torch.manual_seed(0)
    g = ProgressiveGenerator(4, (1, 8, 8), channels=(8, 4))
    z = torch.randn(3, 4)
    with torch.no_grad():
        previous = nn.functional.interpolate(g(z, level=0, alpha=1.0), size=(8, 8), mode="nearest")
        new_block = g.to_rgb[1](g.blocks[1](g.features(z, 0)))
        torch.testing.assert_close(g(z, level=1, alpha=0.0), previous)
        torch.testing.assert_close(g(z, level=1, alpha=1.0), new_block)
        torch.testing.assert_close(g(z, level=1, alpha=0.3), 0.7 * previous + 0.3 * new_block)


def test_progressive_discriminator_fades_in_the_new_level():
    torch.manual_seed(0)
    d = ProgressiveDiscriminatorTrunk((1, 8, 8), channels=(4, 8))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        coarse = d(nn.functional.avg_pool2d(x, 2), level=0, alpha=1.0)
        torch.testing.assert_close(d(x, level=1, alpha=0.0), coarse)
        full = d.blocks[0](d.blocks[1](d.from_rgb[1](x)))
        torch.testing.assert_close(d(x, level=1, alpha=1.0), full)


def test_pixel_norm_gives_unit_mean_square_per_pixel():
    x = 3.0 * torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(PixelNorm()(x).pow(2).mean(1), torch.ones(2, 4, 4))


def test_minibatch_stddev_channel_is_the_batch_standard_deviation():
    x = torch.randn(6, 3, 2, 2)
    out = MinibatchStdDev(group_size=6)(x)
    assert out.shape == (6, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    expected = x.std(0, unbiased=False).mean()
    torch.testing.assert_close(out[:, 3], expected.expand(6, 2, 2), atol=1e-6, rtol=1e-6)
    grouped = MinibatchStdDev(group_size=2)(x)[:, 3, 0, 0]  # groups {0, 3}, {1, 4}, {2, 5}
    for b in range(6):
        torch.testing.assert_close(grouped[b], x[[b % 3, b % 3 + 3]].std(0, unbiased=False).mean(), atol=1e-6, rtol=1e-6)


def test_growth_schedule_and_the_ema_copy_knows_the_growth():
    model = genlab.create("progan", data=genlab.data.load("digits"), channels=(4, 8), latent_dim=4, grow_steps=4)
    # 8x8 digits: levels 4x4 (0) and 8x8 (1); 4 steps at level 0, fade-in over 4, then level 1
    assert [model.growth_at(s) for s in (0, 3, 4, 6, 8, 100)] == [
        {"level": 0, "alpha": 1.0}, {"level": 0, "alpha": 1.0}, {"level": 1, "alpha": 0.0},
        {"level": 1, "alpha": 0.5}, {"level": 1, "alpha": 1.0}, {"level": 1, "alpha": 1.0},
    ]
    data = genlab.data.load("digits")
    run = fit(model, data, 7, ema_decay=0.999)
    assert run.model.current_growth() == run.ema.current_growth() == model.growth_at(6)
    assert run.ema.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)


# -- configuration and learning ----------------------------------------------------------------------------
def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="discriminator_norm='layer'"):
        GANConfig(loss="wasserstein-gp", discriminator_norm="batch")
    with pytest.raises(ConfigError, match="architecture='mlp'"):
        GAN(GANConfig(architecture="dcgan"), VECTORS)
    with pytest.raises(ConfigError, match="loss="):
        GANConfig(loss="kl")
    with pytest.raises(ConfigError, match="divergence="):
        GANConfig(loss="f-gan", divergence="total-variation")
    with pytest.raises(ConfigError, match="built for image"):
        genlab.create("dcgan", data=VECTORS)


def test_a_short_fit_learns_the_spread_of_the_data():
    g = np.random.default_rng(0)
    x = np.stack([3.0 + 2.0 * g.standard_normal(2000), -1.0 + 0.3 * g.standard_normal(2000)], 1).astype(np.float32)
    data = array_dataset(x, name="gaussian")
    torch.manual_seed(0)
    model = genlab.create("lsgan", data=data, hidden=(32, 32), latent_dim=2)
    before = model.sample(2000, generator=torch.Generator().manual_seed(0)).std(0)
    run = fit(model, data, 400, batch_size=128, lr=2e-3, ema_decay=0.99)
    samples = run.sampling_model.sample(2000, generator=torch.Generator().manual_seed(0))
    assert float(before[0]) < 1.0 and float(before[1]) < 0.1  # an untrained G barely spreads
    torch.testing.assert_close(samples.mean(0), torch.tensor([3.0, -1.0]), atol=0.3, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.tensor([2.0, 0.3]), rtol=0.25, atol=0)


def test_validation_loss_runs_without_updates():
    data = toy_data()
    model = genlab.create("gan", data=data, **TINY)
    before = parameters(model)
    loss = model.loss(Batch(data.split("val").tensors()[0][:16]))
    assert math.isfinite(float(loss.total.detach())) and {"g_loss", "d_acc_real", "collapse"} <= set(loss.terms)
    assert not changed(before, model)


# -- the step calls the parts: losses, regularisers and network kinds from their registries -----------
class StubContext:
    """The engine's StepContext without updates: the players' parameters stay as they are."""

    step = 0

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        pass

    def optimizer_step(self, name):
        pass


def test_r1_adds_half_gamma_times_the_squared_gradient_at_the_real_data():
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    totals, r1 = {}, None
    for gamma in (0.0, 3.0):
        torch.manual_seed(0)
        model = GAN(GANConfig(r1_gamma=gamma, **TINY), VECTORS)
        torch.manual_seed(1)  # the same fakes for both
        loss = model.training_step(Batch(x), StubContext())
        totals[gamma] = float(loss.total)
        if gamma:
            r1 = float(loss.terms["r1"])
            real = model.to_model_space(x)
            jac = torch.autograd.functional.jacobian(lambda v: model.discriminate(v), real)  # (B, B, 2)
            expected = torch.stack([jac[i, i] for i in range(8)]).pow(2).sum(1).mean()
            assert r1 == pytest.approx(float(expected), rel=1e-5)
    assert totals[3.0] - totals[0.0] == pytest.approx(1.5 * r1, rel=1e-5)
    with pytest.raises(ConfigError, match="discriminator_norm='layer'"):
        GANConfig(r1_gamma=1.0, discriminator_norm="batch")
    assert GAN(GANConfig(r1_gamma=1.0, architecture="dcgan", channels=(4, 8)), IMAGES)._discriminator_norm() == "none"
    assert GAN(GANConfig(architecture="dcgan", channels=(4, 8)), IMAGES)._discriminator_norm() == "batch"


@pytest.fixture
def registered_test_loss():
    """A loss registered outside gan/model.py, with a regulariser that adds a penalty and projects
    D's weights, counting its calls."""

    class CountingRegularizer(DiscriminatorRegularizer):
        term = "test_penalty"
        weight = 0.5

        def __init__(self):
            self.penalties = self.projections = 0

        def penalty(self, critic, real, fake, real_out):
            self.penalties += 1
            return critic(real).pow(2).mean()

        def after_step(self, discriminator):
            self.projections += 1
            with torch.no_grad():
                for p in discriminator.parameters():
                    p.clamp_(-0.05, 0.05)

    @register_loss("test-hinge-counted")
    class CountedHinge(HingeLoss):
        instances = []

        def __init__(self):
            self.regularizer = CountingRegularizer()
            CountedHinge.instances.append(self)

        def regularizers(self):
            return (self.regularizer,)

    yield CountedHinge
    LOSS_REGISTRY.pop("test-hinge-counted")


def test_a_loss_registered_outside_the_model_trains_through_the_shared_step(registered_test_loss):
    data = toy_data()
    model = genlab.create("gan", data=data, loss="test-hinge-counted", **TINY)
    g0, d0 = parameters(model.generator), parameters(model.discriminator)
    run = fit(model, data, 2, log_every=1)
    regularizer = registered_test_loss.instances[-1].regularizer
    assert model.adversarial_loss is registered_test_loss.instances[-1]
    assert regularizer.penalties == 2 and regularizer.projections == 2
    assert "test_penalty" in run.history[0] and "d_overpowers" in run.history[0]
    assert changed(g0, model.generator) == set(g0) and changed(d0, model.discriminator)
    values = torch.cat([p.detach().flatten() for p in model.discriminator.parameters()])
    assert float(values.abs().max()) == pytest.approx(0.05)  # at the projection's bound


def test_no_step_of_the_gan_tests_a_loss_or_architecture_name():
    """The model's methods read the loss's and the network kind's parts: no comparison with the
    config's loss or architecture word, no loss name as a literal, no isinstance on a loss class."""
    words = set(LOSSES) | set(NETWORK_KINDS)
    tree = ast.parse(inspect.getsource(gan_model))
    checked = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name in ("GAN", "GANConfig")]
    assert len(checked) == 2
    for cls in checked:
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    assert node.value not in words, f"{cls.name}.{fn.name} names {node.value!r}"
                if isinstance(node, ast.Compare):
                    names = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                    assert not names & {"loss", "architecture"}, f"{cls.name}.{fn.name} compares the config's loss or architecture"
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                    assert "Loss" not in ast.unparse(node), f"{cls.name}.{fn.name}: {ast.unparse(node)}"


def test_a_network_kind_registered_outside_the_model_builds_both_players():
    kind = NetworkKind(
        "test-wide-mlp",
        generator_trunk=lambda in_dim, shape, o: MLPGenerator(in_dim, shape, hidden=(2 * o.hidden[0],)),
        discriminator_trunk=lambda shape, o: MLPDiscriminatorTrunk(shape, hidden=(2 * o.hidden[0],)),
    )
    register_network_kind(kind)
    try:
        data = toy_data()
        model = genlab.create("gan", data=data, architecture="test-wide-mlp", **TINY)
        assert model.network is kind and model.discriminator.trunk.out_features == 32
        assert model.generator.trunk.net.net[0].out_features == 32
        g0 = parameters(model.generator)
        fit(model, data, 1)
        assert changed(g0, model.generator) == set(g0)
    finally:
        NETWORK_KINDS.pop("test-wide-mlp")
    with pytest.raises(ConfigError, match="architecture="):
        GANConfig(architecture="test-wide-mlp")


def test_presets_are_written_out_and_keep_their_names_and_defaults():
    source = inspect.getsource(gan_model)
    expected = {
        "dcgan": ("DCGAN", dict(architecture="dcgan")),
        "wgan": ("WGAN", dict(loss="wasserstein", n_critic=5, optimizer="rmsprop", architecture="auto")),
        "wgan-gp": ("WGANGP", dict(loss="wasserstein-gp", n_critic=None, betas=(0.5, 0.9), architecture="auto")),
        "lsgan": ("LSGAN", dict(loss="least-squares", architecture="auto")),
        "fgan": ("FGAN", dict(loss="f-gan", architecture="auto")),
        "sagan": ("SAGAN", dict(loss="hinge", architecture="dcgan", self_attention=True, spectral_norm="both",
                                lr_generator=1e-4, lr_discriminator=4e-4, betas=(0.0, 0.9))),
        "cgan": ("CGAN", dict(class_conditional=True, architecture="auto")),
        "progan": ("ProGAN", dict(architecture="progressive", loss="wasserstein-gp", drift_weight=0.001, betas=(0.0, 0.99))),
    }
    for name, (stem, changes) in expected.items():
        entry = genlab.registry.get(name)
        assert f"class {stem}Config(GANConfig):" in source and f"class {stem}(GAN):" in source
        assert entry.config_class.__name__ == f"{stem}Config" and entry.model_class.__name__ == stem
        assert entry.config_class().to_dict() == GANConfig(**changes).to_dict()  # GANConfig's fields, other defaults
    assert genlab.registry.get("wgan-gp").model_class.train_defaults["max_steps"] == 15000
    assert genlab.registry.get("progan").model_class.data_kinds == ("image",)


def test_wgan_gp_critic_steps_follow_the_size_preset_and_a_given_value_wins():
    """The paper's n_critic = 5 for its networks and for vectors; 2 for the CPU networks, whose
    10-minute budget would otherwise leave G a few hundred steps."""
    spec = DataSpec("mnist-like", kind="image", shape=(1, 28, 28), value_range=(0.0, 1.0), levels=256)
    assert genlab.create("wgan-gp", data=spec, preset="cpu").config.n_critic == 2
    assert genlab.create("wgan-gp", data=spec, preset="paper").config.n_critic == 5
    assert genlab.create("wgan-gp", data=genlab.data.load("moons", n=64), preset="cpu").config.n_critic == 5
    assert genlab.create("wgan-gp", data=spec, preset="cpu", n_critic=3).config.n_critic == 3
    with pytest.raises(ConfigError, match="n_critic"):
        GANConfig(n_critic=0)


def test_generator_channels_widen_g_alone():
    spec = DataSpec("mnist-like", kind="image", shape=(1, 28, 28), value_range=(0.0, 1.0), levels=256)
    model = genlab.create("dcgan", data=spec, preset="cpu", generator_channels=(32, 64, 128))
    convs = [m for m in model.generator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(128, 64), (64, 32), (32, 1)]  # 7x7 -> 14 -> 28 -> image
    d_convs = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in d_convs] == [16, 32, 64]  # D keeps the preset's widths
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
