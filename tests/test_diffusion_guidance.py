"""Classifier guidance checked against a Gaussian mixture, whose noised class posterior p_t(k | x_t) and
noised component scores are known in closed form: with the exact unconditional denoiser and the exact
noisy classifier, guidance at scale 1 must be the exact denoiser of component k (Bayes' rule on p_t), and
a trained NoisyClassifier must reach the Bayes accuracy of the same noised points."""

import math

import pytest
import torch
from torch import nn

from genlab.data import DataSpec
from genlab.data.dataset import Dataset
from genlab.errors import ConfigError, GenlabError
from genlab.models.diffusion import GaussianMixtureData
from genlab.models.diffusion.guidance import (
    NoisyClassifier,
    classifier_guided_eps_fn,
    guided_generate,
    load_classifier,
    save_classifier,
    train_noisy_classifier,
)
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel

VECTOR = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf), num_classes=2)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=torch.float64)
STDS = torch.tensor([[0.7, 0.5], [0.8, 0.6]], dtype=torch.float64)  # overlapping: guidance has work to do


pytestmark = pytest.mark.usefixtures("one_thread")


def _mixture() -> GaussianMixtureData:
    return GaussianMixtureData(WEIGHTS, MEANS, stds=STDS)


def _component(k: int) -> GaussianMixtureData:
    return GaussianMixtureData(torch.ones(1, dtype=torch.float64), MEANS[k : k + 1], stds=STDS[k : k + 1])


class ExactEps(nn.Module):
    """The network replaced by the exact eps of the noised mixture (t = noise level / 1000 on discrete schedules)."""

    def __init__(self, mixture: GaussianMixtureData, schedule) -> None:
        super().__init__()
        self.mixture, self.schedule = mixture, schedule
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, noise_level, y=None):
        return self.mixture.eps(x, noise_level / 1000.0, self.schedule)


def _exact_model(**fields) -> DiffusionModel:
    model = DiffusionModel(DiffusionConfig(hidden=(8,), **fields), VECTOR).double()
    model.initialized_from_data.fill_(1)  # normalised space = data space
    model.net = ExactEps(_mixture(), model.schedule)
    return model


def _exact_log_probs(schedule):
    """log p_t(k | x_t) = log w_k + log N(x_t; alpha m_k, alpha^2 C_k + sigma^2 I) - log p_t(x_t), (B, K):
    the Bayes classifier of the noised mixture."""

    def log_probs(x_t, t):
        joint = torch.stack([torch.log(WEIGHTS[k]) + _component(k).marginal_log_prob(x_t, t, schedule) for k in range(2)], dim=1)
        return torch.log_softmax(joint, dim=1)

    return log_probs


def test_guidance_with_the_exact_classifier_is_the_exact_conditional_denoiser():
    """-sigma grad log p_t(y | x) = eps(x | y) - eps(x), so eps_tilde = eps + s (eps(x | y) - eps(x)): scale 1
    gives component y's own exact eps, any scale the straight line through both."""
    model = _exact_model()
    schedule = model.schedule
    generator = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(256, 2, generator=generator, dtype=torch.float64)
    t = 0.01 + 0.98 * torch.rand(256, generator=generator, dtype=torch.float64)
    unconditional = _mixture().eps(x, t, schedule)
    for k in range(2):
        conditional = _component(k).eps(x, t, schedule)
        guided = classifier_guided_eps_fn(model, _exact_log_probs(schedule), k, 1.0)(x, t)
        torch.testing.assert_close(guided, conditional, rtol=1e-9, atol=1e-9)
        sharpened = classifier_guided_eps_fn(model, _exact_log_probs(schedule), k, 3.0)(x, t)
        torch.testing.assert_close(sharpened, unconditional + 3.0 * (conditional - unconditional), rtol=1e-9, atol=1e-9)
    # a callable that already returns log p(y | x_t) for the wanted labels, (B,), gives the same
    log_p_first = lambda x_t, t_: _exact_log_probs(schedule)(x_t, t_)[:, 0]  # noqa: E731
    torch.testing.assert_close(classifier_guided_eps_fn(model, log_p_first, None, 1.0)(x, t), _component(0).eps(x, t, schedule))
    torch.testing.assert_close(classifier_guided_eps_fn(model, _exact_log_probs(schedule), 0, 0.0)(x, t), unconditional)


@pytest.mark.parametrize("k", [0, 1])
def test_guided_sampling_at_scale_one_samples_the_class_gaussian(k):
    """Heun's sampler (50 steps, 99 evaluations) driven by the guided exact eps draws from N(m_k, C_k).
    Tolerances: 4 standard errors at n = 4000 (of the mean: std / sqrt(n); of a variance: var sqrt(2 / n)),
    plus the sampler's own discretisation bias (measured with component k's exact eps and n = 40,000:
    variances 1-2 % low, means within 0.015)."""
    model = _exact_model(sampler="heun", sample_steps=50)
    n = 4000
    result = guided_generate(model, _exact_log_probs(model.schedule), n, y=k, scale=1.0, generator=torch.Generator().manual_seed(1))
    x = result.x
    assert x.shape == (n, 2) and result.nfe == 99
    variance = STDS[k] ** 2
    assert torch.all((x.mean(0) - MEANS[k]).abs() < 4 * STDS[k] / math.sqrt(n) + 0.015), (x.mean(0), MEANS[k])
    assert torch.all((x.var(0) - variance).abs() < 4 * variance * math.sqrt(2 / n) + 0.03 * variance), (x.var(0), variance)
    assert abs(torch.cov(x.T)[0, 1]) < 4 * STDS[k].prod() / math.sqrt(n)  # the component's axes are independent


def test_a_larger_scale_sharpens_the_class():
    """At s > 1 the samples follow p_t(x) p_t(y | x)^s: more of them lie nearer mean k than the other
    mean than the exact component has (95.4 % for component 0), and they spread less."""
    model = _exact_model(sampler="heun", sample_steps=50)
    n = 4000

    def nearer_share(x):
        return ((x - MEANS[0]).norm(dim=1) < (x - MEANS[1]).norm(dim=1)).double().mean().item()

    exact_share = nearer_share(_component(0).sample(200_000, generator=torch.Generator().manual_seed(0)))
    shares, spreads = [], []
    for scale in (1.0, 3.0):
        x = guided_generate(model, _exact_log_probs(model.schedule), n, y=0, scale=scale, generator=torch.Generator().manual_seed(2)).x
        shares.append(nearer_share(x))
        spreads.append(x.var(0).sum().item())
    standard_error = math.sqrt(exact_share * (1 - exact_share) / n)  # 0.0033
    assert abs(shares[0] - exact_share) < 4 * standard_error, (shares, exact_share)
    assert shares[1] > shares[0] + 6 * standard_error, shares
    assert spreads[1] < 0.8 * spreads[0], spreads


def test_a_trained_noisy_classifier_reaches_the_bayes_accuracy():
    """Trained on the mixture's labelled samples at the model's training times, the classifier's accuracy on
    fresh noised points matches the Bayes classifier's on the same points: near 95 % at small t, and at
    t_max (alpha = 0.006: no signal left) both fall to the prior's majority share, 0.7. With n = 8000 the
    standard error of an accuracy is <= 0.0056; the two accuracies share their points, so they differ less."""
    model = DiffusionModel(DiffusionConfig(hidden=(8,)), VECTOR)
    model.initialized_from_data.fill_(1)
    x, components = _mixture().sample(4000, generator=torch.Generator().manual_seed(0), return_components=True)
    classifier = train_noisy_classifier(model, (x.float(), components), steps=500, hidden=(64, 64), embedding_dim=32, seed=0)
    generator = torch.Generator().manual_seed(5)
    x0, labels = _mixture().sample(8000, generator=generator, return_components=True)
    accuracies = {}
    for time in (0.02, 1.0):
        t = torch.full((8000,), time)
        x_t = model.schedule.q_sample(x0.float(), t, generator=generator)
        with torch.no_grad():
            trained = (classifier.log_prob(x_t, t, model.schedule).argmax(1) == labels).float().mean().item()
        bayes = (_exact_log_probs(model.schedule)(x_t.double(), t.double()).argmax(1) == labels).double().mean().item()
        accuracies[time] = (trained, bayes)
    trained, bayes = accuracies[0.02]
    assert bayes > 0.93 and trained > bayes - 0.015, accuracies
    trained, bayes = accuracies[1.0]
    assert abs(bayes - 0.7) < 0.02 and abs(trained - bayes) < 0.015, accuracies

    # and it steers: guided samples of class 0 are mostly class 0 (0.3 of the unguided ones are)
    exact = _exact_model(sample_steps=50)
    samples = guided_generate(exact, classifier, 2000, y=0, scale=1.0, generator=torch.Generator().manual_seed(3)).x
    assert _mixture().responsibilities(samples)[:, 0].mean() > 0.85


def test_classifiers_train_on_datasets_and_images_and_round_trip_through_safetensors(tmp_path):
    import genlab

    data = genlab.data.load("digits")
    model = genlab.create("ddpm", data=data, preset="tiny", steps=20)
    classifier = train_noisy_classifier(model, data, steps=2, batch_size=8, channels=(8, 16), embedding_dim=16, seed=0)
    assert classifier.num_classes == 10 and not classifier.training
    same = train_noisy_classifier(model, data, steps=2, batch_size=8, channels=(8, 16), embedding_dim=16, seed=0)
    for a, b in zip(classifier.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)  # the same seed, the same classifier
    path = save_classifier(classifier, tmp_path)
    assert path == tmp_path / "classifier.safetensors"
    loaded = load_classifier(tmp_path)
    x_t, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    torch.testing.assert_close(loaded.log_prob(x_t, t, model.schedule), classifier.log_prob(x_t, t, model.schedule))
    images = guided_generate(model, loaded, 3, y=[1, 2, 3], scale=2.0, steps=3, generator=torch.Generator().manual_seed(0)).x
    assert images.shape == (3, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images * 16, torch.round(images * 16))  # the data's space, quantized


def test_errors_say_what_to_do(tmp_path):
    model = _exact_model()
    classifier = NoisyClassifier(shape=(2,), num_classes=2, hidden=(8,))
    with pytest.raises(ConfigError, match="scale"):
        classifier_guided_eps_fn(model, classifier, 0, -1.0)
    with pytest.raises(ConfigError, match=r"labels y must lie in \[0, 1\]"):
        guided_generate(model, classifier, 2, y=2)
    with pytest.raises(ConfigError, match="one label or 3 labels"):
        guided_generate(model, classifier, 3, y=[0, 1])
    with pytest.raises(GenlabError, match="train_noisy_classifier"):
        load_classifier(tmp_path)
    unlabelled = Dataset(torch.zeros(10, 2), DataSpec("u", kind="vector", shape=(2,), value_range=(-math.inf, math.inf)))
    with pytest.raises(GenlabError, match="no labels"):
        train_noisy_classifier(model, unlabelled, steps=1)
