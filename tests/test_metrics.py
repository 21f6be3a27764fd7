"""genlab.metrics against independent references: closed forms, scipy, brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch

import genlab
from genlab.errors import ConfigError, DataError
from genlab.metrics import (
    ClassifierFeatures,
    bits_per_dim,
    compute_features,
    evaluate_samples,
    fid,
    frechet_distance,
    get_extractor,
    kid,
    mmd,
    nats_to_bits_per_dim,
    precision_recall,
    shipped_extractors,
    train_feature_classifier,
)
from genlab.metrics import kernels as kernels_module
from genlab.nn import kernels as nn_kernels
from genlab.metrics import manifold as manifold_module
from genlab.metrics.features import FORMAT, _random_hflip, _random_shift, classifier_accuracy


def random_spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T + (0.0 if rank else 0.1) * np.eye(d)


# -- Fréchet distance ---------------------------------------------------------------------------


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The textbook formula with scipy's general matrix square root of S1 S2."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("d", [1, 4, 12])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    expected = scipy_frechet(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9, abs=1e-9)  # symmetric
    # torch inputs give the same float
    t = [torch.as_tensor(a, dtype=torch.float64) for a in (mu1, s1, mu2, s2)]
    assert frechet_distance(*t) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_one_dimensional_closed_form():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2
    m1, s1, m2, s2 = 0.3, 1.7, -1.1, 0.4
    got = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)


def test_frechet_distance_commuting_diagonal_closed_form_including_singular():
    # diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2,
    # also when some variances are exactly 0 (a rank-deficient covariance)
    a = np.array([1.0, 0.0, 4.0, 2.5, 0.0])
    b = np.array([0.0, 0.0, 1.0, 0.1, 9.0])
    mu1, mu2 = np.arange(5.0), np.arange(5.0)[::-1]
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # rotate both by one orthogonal matrix: the distance is invariant
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    got = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_near_singular_covariances():
    # fewer samples than dimensions: rank-3 covariances in 20-D; the distance of a Gaussian to itself
    # is 0, and the eps offset of pytorch-fid changes the result by O(D eps) only
    rng = np.random.default_rng(1)
    s = random_spd(20, rng, rank=3)
    mu = rng.normal(size=20)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    s2 = random_spd(20, rng, rank=3)
    plain = frechet_distance(mu, s, mu, s2)
    assert np.isfinite(plain) and plain > 0
    assert frechet_distance(mu, s, mu, s2, eps=1e-6) == pytest.approx(plain, abs=1e-3)
    # an independent check of the singular case: scipy's sqrtm after pytorch-fid's offset
    offset = 1e-6 * np.eye(20)
    assert plain == pytest.approx(scipy_frechet(mu, s + offset, mu, s2 + offset), abs=1e-3)


def test_fid_of_feature_sets_uses_sample_mean_and_unbiased_covariance():
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(50, 6)), rng.normal(1.0, 2.0, size=(70, 6))
    expected = scipy_frechet(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert fid(torch.tensor(f1, dtype=torch.float32), torch.tensor(f2)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(DataError, match="at least 2"):
        fid(f1[:1], f2)
    with pytest.raises(DataError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# -- MMD and KID ---------------------------------------------------------------------------------


def brute_force_mmd2(x, y, k) -> float:
    """The U-statistic of Gretton et al. (2012, eq. 3) with explicit loops."""
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_rbf_and_polynomial_match_brute_force():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 2)), rng.normal(0.5, 1.2, size=(5, 2))
    bandwidths = [0.5, 1.0, 3.0]

    def rbf(a, b):
        return sum(math.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in bandwidths)

    assert mmd(x, y, bandwidths=bandwidths) == pytest.approx(brute_force_mmd2(x, y, rbf), rel=1e-10)

    def poly(a, b):
        return (a @ b / 2 + 1.0) ** 3

    assert mmd(x, y, kernel="polynomial") == pytest.approx(brute_force_mmd2(x, y, poly), rel=1e-10)


def test_mmd_median_heuristic_and_blocked_sums(monkeypatch):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.3
    median = np.median(scipy.spatial.distance.pdist(x))
    explicit = mmd(x, y, bandwidths=[median * c for c in (0.25, 0.5, 1, 2, 4)])
    assert mmd(x, y) == pytest.approx(explicit, rel=1e-10)
    monkeypatch.setattr(nn_kernels, "_BLOCK_ELEMENTS", 64)  # row blocks of 1-2 rows
    assert mmd(x, y) == pytest.approx(explicit, rel=1e-10)


def test_mmd_rbf_matches_gaussian_closed_form():
    # P = N(0, s^2 I), Q = N(delta, s^2 I), k = exp(-|x-y|^2 / (2h^2)) in d dims:
    # E k(z) for z ~ N(mu, 2 s^2 I) is (h^2 / (h^2 + 2 s^2))^{d/2} exp(-|mu|^2 / (2 (h^2 + 2 s^2)))
    d, s, h = 2, 1.0, 1.5
    delta = np.array([1.0, -0.5])
    c = (h * h / (h * h + 2 * s * s)) ** (d / 2)
    exact = 2 * c - 2 * c * math.exp(-delta @ delta / (2 * (h * h + 2 * s * s)))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, d, generator=g, dtype=torch.float64) * s
    y = torch.randn(3000, d, generator=g, dtype=torch.float64) * s + torch.tensor(delta)
    assert mmd(x, y, bandwidths=[h]) == pytest.approx(exact, abs=0.01)
    assert exact > 0.1


def test_kid_equals_brute_force_when_subsets_are_the_whole_sets():
    # with subset_size >= both set sizes every subset is a permutation of the whole set, and the
    # U-statistic does not depend on order
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 4)), rng.normal(0.3, 1.0, size=(6, 4))

    def poly(a, b):
        return (a @ b / 4 + 1.0) ** 3

    mean, std = kid(x, y, subsets=3, subset_size=50)
    assert mean == pytest.approx(brute_force_mmd2(x, y, poly), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_and_detects_a_shift():
    # small subsets from one distribution: the mean over many subsets is 0 within Monte Carlo error
    # (the biased V-statistic, which keeps the diagonal, would sit clearly above 0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    subsets = 1000
    mean, std = kid(x, y, subsets=subsets, subset_size=10, generator=torch.Generator().manual_seed(1))
    assert abs(mean) < 3.5 * std / math.sqrt(subsets)
    x_sub, y_sub = x[:10].double(), y[:10].double()
    kernel = kernels_module.polynomial_kernel(8)
    biased_excess = (kernel(x_sub, x_sub).diagonal().mean() + kernel(y_sub, y_sub).diagonal().mean()) / 10
    assert biased_excess.item() > 10 * std / math.sqrt(subsets)

    shifted, shifted_std = kid(x, y + 0.5, subsets=20, subset_size=500, generator=torch.Generator().manual_seed(1))
    same, _ = kid(x, y, subsets=20, subset_size=500, generator=torch.Generator().manual_seed(1))
    assert shifted > 10 * shifted_std / math.sqrt(20) and shifted > 20 * abs(same)
    # reproducible: the generator fixes the subsets
    assert kid(x, y, subsets=5, subset_size=30, generator=torch.Generator().manual_seed(7)) == kid(
        x, y, subsets=5, subset_size=30, generator=torch.Generator().manual_seed(7)
    )


# -- precision and recall ------------------------------------------------------------------------


def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(a):
        d = scipy.spatial.distance.cdist(a, a)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def coverage(query, support):
        d = scipy.spatial.distance.cdist(query, support)
        return float(np.mean([(d[i] <= radii(support)).any() for i in range(len(query))]))

    return coverage(fake, real), coverage(real, fake)


def test_precision_recall_hand_built_one_dimensional_case():
    # k = 1. Real 0,1,2,3: every radius is 1. Fake radii: 0.5->0.1, 0.6->0.1, 2.8->0.7, 3.5->0.7, 5->1.5.
    # Precision: 0.5, 0.6, 2.8, 3.5 lie within 1 of a real point, 5.0 does not -> 4/5.
    # Recall: only 3 lies in a fake ball (|3 - 2.8| = 0.2 <= 0.7) -> 1/4.
    real = torch.tensor([0.0, 1.0, 2.0, 3.0])
    fake = torch.tensor([0.5, 0.6, 2.8, 3.5, 5.0])
    precision, recall = precision_recall(real, fake, k=1)
    assert (precision, recall) == (pytest.approx(0.8), pytest.approx(0.25))


def test_precision_recall_identical_and_disjoint_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_recall_blocked_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(120, 3)), rng.normal(0.8, 0.6, size=(90, 3))
    expected = brute_force_precision_recall(real, fake, k=3)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    got = precision_recall(torch.tensor(real), torch.tensor(fake), k=3)
    assert got == pytest.approx(expected)
    monkeypatch.setattr(manifold_module, "_BLOCK_ELEMENTS", 500)  # blocks of 4-5 rows
    assert precision_recall(torch.tensor(real), torch.tensor(fake), k=3) == pytest.approx(expected)
    with pytest.raises(DataError, match="more than 3"):
        precision_recall(real[:3], fake, k=3)


# -- bits per dimension --------------------------------------------------------------------------


def test_bits_per_dim_hand_values():
    d = 784
    # the uniform density on [0, 1]^D has NLL 0 nats; 8-bit data -> exactly 8 bits/dim
    assert bits_per_dim(torch.zeros(3), d, levels=256).tolist() == pytest.approx([8.0] * 3, abs=1e-12)
    # the uniform density on [-1, 1]^D has NLL D ln 2; the bins are twice as wide -> still 8
    assert float(bits_per_dim(torch.tensor([d * math.log(2)]), d, levels=256, value_range=(-1, 1))) == pytest.approx(8.0)
    # scikit-learn digits: 17 levels on [0, 1]
    assert bits_per_dim(0.0, 64, levels=17) == pytest.approx(math.log2(17))
    # no correction: D ln 2 nats = 1 bit per dimension
    assert float(nats_to_bits_per_dim(torch.tensor(d * math.log(2)), d)) == pytest.approx(1.0)
    assert bits_per_dim(10 * math.log(2), 5) == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        bits_per_dim(0.0, 4, levels=1)


def test_bits_per_dim_of_a_bin_constant_density_is_the_discrete_entropy():
    # a density constant on each dequantization bin, p(x) = P(v) / w, makes the dequantization bound
    # tight: the corrected bits/dim must equal -log2 P(v) / D of the discrete model exactly
    levels, d = 4, 3
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    values = torch.tensor([[0, 3, 2], [1, 1, 3]])
    g = torch.Generator().manual_seed(0)
    x = (values + torch.rand(values.shape, generator=g, dtype=torch.float64)) / levels  # dequantized
    bins = torch.floor(x * levels).long()
    nll_continuous = -torch.log(probs[bins] * levels).sum(1)
    expected = -torch.log2(probs[values]).sum(1) / d
    assert torch.allclose(bits_per_dim(nll_continuous, d, levels=levels), expected)


# -- feature extractors --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return genlab.data.load("digits", seed=0)


@pytest.fixture(scope="module")
def digits_extractor():
    return get_extractor("digits")


def test_shipped_digits_extractor_accuracy_and_metadata(digits, digits_extractor):
    x, y = digits.split("test").tensors()
    assert "digits" in shipped_extractors()
    assert digits_extractor.info["dataset"] == "digits"
    assert digits_extractor.input_shape == (1, 8, 8)
    accuracy = classifier_accuracy(digits_extractor, x, y)
    assert accuracy > 0.95
    # the recorded accuracy is what the file delivers
    assert accuracy == pytest.approx(digits_extractor.info["test_accuracy"], abs=1e-9)


def test_fid_kid_precision_recall_on_digits(digits, digits_extractor):
    real, _ = digits.split("test").tensors()
    other, _ = digits.split("train").tensors()
    g = torch.Generator().manual_seed(0)
    resample = real[torch.randint(0, real.shape[0], (real.shape[0],), generator=g)]
    noise = torch.rand(real.shape, generator=g)
    f_real = compute_features(digits_extractor, real)
    fid_noise = fid(f_real, compute_features(digits_extractor, noise))
    fid_resample = fid(f_real, compute_features(digits_extractor, resample))
    fid_train = fid(f_real, compute_features(digits_extractor, other))
    assert fid_resample < 0.05 * fid_noise and fid_train < 0.05 * fid_noise

    same = evaluate_samples(real, other, digits_extractor, kid_subsets=10, kid_subset_size=200)
    bad = evaluate_samples(real, noise, "digits", kid_subsets=10, kid_subset_size=200)
    assert set(same) == {"fid", "kid", "kid_std", "precision", "recall", "inception_score", "inception_score_std"}
    assert same["fid"] == pytest.approx(fid_train, rel=1e-6)
    assert abs(same["kid"]) < 0.05 * bad["kid"]
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    # classifier features map some noise images into the digits' clusters, and 180 real points in
    # 128-D make wide k-NN balls, so noise precision is not 0 (0.33 here); it is far below real's
    assert bad["precision"] < 0.5 * same["precision"] and bad["recall"] < 0.2
    # the classifier (test accuracy 0.994) is confident on real digits spread over 10 classes: IS near
    # 10 for the 1,437 training images; noise is classified into few classes, less confidently
    assert same["inception_score"] > 8.5 and bad["inception_score"] < 0.6 * same["inception_score"]


def test_inception_score_against_its_closed_forms_and_the_entropy_identity():
    from scipy.stats import entropy

    from genlab.metrics import inception_score

    assert inception_score(torch.eye(5).repeat(20, 1), splits=1) == (pytest.approx(5.0), 0.0)  # confident, balanced
    assert inception_score(torch.full((40, 5), 0.2), splits=4)[0] == pytest.approx(1.0)  # no information
    assert inception_score(torch.eye(5)[torch.zeros(30, dtype=torch.long)], splits=3)[0] == pytest.approx(1.0)  # one class
    # E KL(p(y|x) || p(y)) = H(p(y)) - E H(p(y|x)), per split
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(300, 7, generator=g, dtype=torch.float64), 1)
    parts = [q.numpy() for q in p.chunk(3)]
    expected = [math.exp(entropy(q.mean(0)) - entropy(q, axis=1).mean()) for q in parts]
    mean, std = inception_score(p, splits=3)
    assert mean == pytest.approx(sum(expected) / 3, rel=1e-9)
    assert std == pytest.approx(float(torch.tensor(expected).std(unbiased=False)), rel=1e-6)
    with pytest.raises(DataError, match="probabilities"):
        inception_score(torch.randn(20, 3), splits=2)


def test_compute_features_batches_and_checks_ranges(digits_extractor):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(37, 1, 8, 8, generator=g)
    whole = compute_features(digits_extractor, images, batch_size=1000)
    assert whole.shape == (37, digits_extractor.feature_dim)
    assert torch.allclose(compute_features(digits_extractor, images, batch_size=5), whole, atol=1e-6)
    as_bytes = (images * 255).round().to(torch.uint8)
    assert torch.allclose(compute_features(digits_extractor, as_bytes), compute_features(digits_extractor, as_bytes.float() / 255))
    with pytest.raises(DataError, match="rescale"):
        compute_features(digits_extractor, images * 2 - 1)
    with pytest.raises(DataError, match=r"\(B, 1, 8, 8\)"):
        compute_features(digits_extractor, torch.rand(2, 1, 28, 28))


def test_get_extractor_errors_name_the_options(tmp_path):
    with pytest.raises(ConfigError, match="'digits'"):
        get_extractor("cifar-resnet")
    with pytest.raises(DataError, match="pt_inception-2015-12-05-6726825d.pth"):
        get_extractor(tmp_path / "missing.pth")
    with pytest.raises(DataError, match="does not exist"):
        get_extractor(tmp_path / "missing.safetensors")


def test_classifier_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ClassifierFeatures(input_shape=(3, 32, 32), num_classes=5, feature_dim=16, widths=(4, 8, 8), info={"dataset": "toy", "test_accuracy": 0.5})
    path = tmp_path / "toy.safetensors"
    model.save(path)
    loaded = get_extractor(str(path))
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded.features(x), model.eval().features(x))
    assert loaded.info == {"dataset": "toy", "test_accuracy": 0.5}
    assert loaded.name == "toy-classifier" and loaded.feature_dim == 16


def test_classifier_options_build_a_batch_norm_stack_that_round_trips(tmp_path):
    torch.manual_seed(0)
    model = ClassifierFeatures(input_shape=(3, 16, 16), num_classes=4, feature_dim=8, widths=(4, 4, 8, 8), pool_after=(1, 3), batch_norm=True)
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8] and all(c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.body) == 4
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.body) == 2
    model.train()
    model.logits(torch.rand(6, 3, 16, 16))  # moves the running statistics away from their initial values
    path = tmp_path / "bn.safetensors"
    model.save(path)
    loaded = ClassifierFeatures.load(path)
    assert loaded.config() == model.config() and loaded.config()["pool_after"] == [1, 3] and loaded.batch_norm
    x = torch.rand(5, 3, 16, 16)
    assert torch.equal(loaded.features(x), model.eval().features(x))  # eval mode: the saved running statistics
    with pytest.raises(ConfigError, match="pool_after"):
        ClassifierFeatures(input_shape=(1, 8, 8), num_classes=2, widths=(4, 4), pool_after=(2,))
    with pytest.raises(ConfigError, match="too small for 3 poolings"):
        ClassifierFeatures(input_shape=(1, 8, 8), num_classes=2, widths=(4, 4, 4), pool_after=(0, 1, 2))


def test_files_from_before_the_options_load_as_the_original_design(tmp_path):
    # the config of digits.safetensors and mnist.safetensors has no pool_after / batch_norm
    import json

    import safetensors.torch

    torch.manual_seed(0)
    model = ClassifierFeatures(input_shape=(1, 8, 8), num_classes=3, feature_dim=8, widths=(4, 8, 8))
    assert [k for k in model.state_dict() if k.endswith("weight")] == [
        "body.0.weight", "body.2.weight", "body.5.weight", "body.9.weight", "head.weight"
    ]  # fmt: skip
    old_config = {"input_shape": [1, 8, 8], "num_classes": 3, "feature_dim": 8, "widths": [4, 8, 8], "dropout": 0.3}
    path = tmp_path / "old.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path), metadata={"format": FORMAT, "config": json.dumps(old_config), "info": "{}"})
    loaded = ClassifierFeatures.load(path)
    assert loaded.pool_after == (1,) and not loaded.batch_norm
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.features(x), model.eval().features(x))


def test_random_hflip_mirrors_the_drawn_half():
    x = torch.arange(6 * 2 * 3 * 4, dtype=torch.float32).reshape(6, 2, 3, 4)
    flipped = _random_hflip(x, torch.Generator().manual_seed(5))
    draws = torch.rand(6, generator=torch.Generator().manual_seed(5)) < 0.5
    assert 0 < draws.sum() < 6
    for b in range(6):
        assert torch.equal(flipped[b], x[b].flip(-1) if draws[b] else x[b])


def test_random_shift_translates_each_image():
    x = torch.arange(2 * 2 * 5 * 5, dtype=torch.float32).reshape(2, 2, 5, 5)
    g = torch.Generator().manual_seed(3)
    shifted = _random_shift(x, 1, g)
    offsets = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    for b in range(2):
        oy, ox = offsets[0, b].item(), offsets[1, b].item()
        assert torch.equal(shifted[b], padded[b, :, oy : oy + 5, ox : ox + 5])


def test_train_feature_classifier_is_deterministic_and_learns(one_thread):
    # two classes told apart by which half of the image is bright
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (96,), generator=g)
    x = 0.3 * torch.rand(96, 1, 8, 8, generator=g)
    x[y == 0, :, :4] += 0.6
    x[y == 1, :, 4:] += 0.6
    data = (x[:64], y[:64])
    held_out = (x[64:], y[64:])
    state = torch.random.get_rng_state()
    options = dict(epochs=5, batch_size=16, lr=1e-2, seed=1, widths=(4, 8, 8), feature_dim=8, val=held_out, test=held_out)
    model_a, accuracy_a = train_feature_classifier(*data, **options)
    model_b, accuracy_b = train_feature_classifier(*data, **options)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's global generator is untouched
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert accuracy_a == accuracy_b > 0.9
    assert model_a.info["seed"] == 1 and model_a.info["test_accuracy"] == accuracy_a
    assert not model_a.training
    # the batch-norm stack with mirroring learns the same task (mirroring swaps nothing here:
    # the bright half is the top or the bottom)
    options.update(widths=(8, 8), pool_after=(0,), batch_norm=True, hflip=True)
    model_c, accuracy_c = train_feature_classifier(*data, **options)
    assert model_c.batch_norm and model_c.info["hflip"] and accuracy_c > 0.9



def test_train_feature_extractor_script_stores_the_architecture_options(tmp_path, one_thread, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_feature_extractor.py"
    spec = importlib.util.spec_from_file_location("train_feature_extractor", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "digits-bn.safetensors"
    argv = ["--data", "digits", "--epochs", "1", "--widths", "8,8,16", "--pool-after", "0,2", "--batch-norm", "--hflip", "--feature-dim", "16", "--quiet"]
    assert script.main([*argv, "--out", str(out)]) == 0
    model = ClassifierFeatures.load(out)
    assert (model.widths, model.pool_after, model.batch_norm, model.feature_dim) == ((8, 8, 16), (0, 2), True, 16)
    assert model.info["dataset"] == "digits" and model.info["hflip"] and model.info["epochs"] == 1
    assert script.main([*argv, "--pool-after", "5", "--out", str(tmp_path / "bad.safetensors")]) == 2
    assert "pool_after" in capsys.readouterr().err


@pytest.mark.dataset
def test_shipped_mnist_extractor_meets_its_accuracy_on_the_real_test_set(shared_datasets):
    extractor = get_extractor("mnist")
    assert "mnist" in shipped_extractors() and extractor.input_shape == (1, 28, 28)
    assert extractor.info["dataset"] == "mnist" and extractor.info["test_accuracy"] >= 0.993
    data = genlab.data.load("mnist", root=shared_datasets)
    x, y = data.split("test").tensors()
    assert len(y) == 10_000
    # the recorded accuracy is what the file delivers on MNIST's official test set
    assert classifier_accuracy(extractor, x, y) == pytest.approx(extractor.info["test_accuracy"], abs=1e-9)
    # and genlab eval picks it for MNIST runs by the dataset's name
    from genlab.metrics.report import default_extractor

    assert default_extractor(data.spec) == "mnist"


@pytest.mark.dataset
def test_shipped_fashion_mnist_extractor_meets_its_accuracy_on_the_real_test_set(shared_datasets, one_thread):
    extractor = get_extractor("fashion_mnist")
    assert extractor.input_shape == (1, 28, 28) and extractor.batch_norm
    assert extractor.info["dataset"] == "fashion_mnist" and extractor.info["test_accuracy"] >= 0.92
    data = genlab.data.load("fashion-mnist", root=shared_datasets)  # an alias: the spec keeps the catalog's name
    x, y = data.split("test").tensors()
    assert len(y) == 10_000
    # the recorded accuracy is what the file delivers on Fashion-MNIST's official test set
    assert classifier_accuracy(extractor, x, y) == pytest.approx(extractor.info["test_accuracy"], abs=1e-9)
    from genlab.metrics.report import default_extractor

    assert default_extractor(data.spec) == "fashion_mnist"


@pytest.mark.dataset
def test_shipped_cifar10_extractor_meets_its_accuracy_on_the_real_test_set(shared_datasets, one_thread):
    extractor = get_extractor("cifar10")
    assert extractor.input_shape == (3, 32, 32) and extractor.batch_norm and extractor.info["hflip"]
    assert extractor.info["dataset"] == "cifar10" and extractor.info["test_accuracy"] >= 0.80
    data = genlab.data.load("cifar10", root=shared_datasets)  # the JPEG copy, decoded once into the cache
    x, y = data.split("test").tensors()
    assert len(y) == 10_000
    # every second test image (5,000, the same number of each class: the test split is sorted by
    # class) halves the time; the whole split's recorded accuracy must hold on it up to sampling noise
    # (binomial standard error about 0.005)
    half = slice(0, None, 2)
    assert torch.bincount(y[half], minlength=10).tolist() == [500] * 10
    assert classifier_accuracy(extractor, x[half], y[half]) == pytest.approx(extractor.info["test_accuracy"], abs=0.02)
    from genlab.metrics.report import default_extractor

    assert default_extractor(data.spec) == "cifar10"


@pytest.mark.parametrize(
    ("name", "shape"),
    [("digits", (1, 8, 8)), ("mnist", (1, 28, 28)), ("fashion_mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))],
)
def test_genlab_eval_picks_the_shipped_extractor_by_the_dataset_name(name, shape):
    from genlab.data.images import image_spec
    from genlab.metrics.report import default_extractor

    # the spec a run records for the catalog's dataset (genlab.data.load(name).spec, aliases included)
    spec = image_spec(name, torch.zeros(1, *shape, dtype=torch.uint8), [str(k) for k in range(10)])
    assert default_extractor(spec) == name
    extractor = get_extractor(default_extractor(spec))
    assert extractor.info["dataset"] == name and extractor.input_shape == shape and extractor.num_classes == 10
