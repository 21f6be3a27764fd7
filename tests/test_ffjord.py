"""FFJORD and the divergence it integrates, against closed forms: the trace and Frobenius norm of
autograd Jacobians, Hutchinson's estimator's mean, a linear field whose flow is a Gaussian with a
known covariance, round trips through the ODE, adjoint against direct gradients, a short fit to a
Gaussian of known entropy, and the registry's build / train / sample / save / load."""

import math

import pytest
import torch
from torch import distributions as D
from torch import nn

import genlab
from genlab.data import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.models.flows.ffjord import FFJORD, ContinuousFlow, ConvVectorField, FFJORDConfig, MLPVectorField
from genlab.nn.divergence import divergence, divergence_and_frobenius, sample_probe

pytestmark = pytest.mark.usefixtures("one_thread")

VECTOR3 = DataSpec("gauss3", kind="vector", shape=(3,), value_range=(-math.inf, math.inf))
TOY2 = DataSpec("toy2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
TIGHT = {"rtol": 1e-9, "atol": 1e-9, "eval_rtol": 1e-9, "eval_atol": 1e-9}


class LinearField(nn.Module):
    """dz/dt = A z (any t)."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, z, t):
        return z @ self.A.T


def random_mlp_field(dim, hidden=(16, 16), seed=0):
    torch.manual_seed(seed)
    field = MLPVectorField(dim, hidden).double()
    with torch.no_grad():  # the output layer starts at zero (the identity flow): make the map non-trivial
        field.net.out.weight.normal_(0.0, 0.5)
        field.net.out.bias.normal_(0.0, 0.3)
    return field


def jacobian_per_sample(fn, x):
    """(B, D, D) Jacobians of a per-sample map fn: (B, ...) -> (B, ...), flattened."""
    b = x.shape[0]
    J = torch.autograd.functional.jacobian(lambda y: fn(y).reshape(b, -1), x)  # (B, D, B, ...)
    J = J.reshape(b, -1, b, x[0].numel())
    return J[torch.arange(b), :, torch.arange(b), :]


# -- the divergence -----------------------------------------------------------------------------------


def test_exact_divergence_and_frobenius_equal_the_autograd_jacobian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 6)).double()

    def f(y):
        return net(y).reshape(y.shape)

    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    div, frobenius = divergence_and_frobenius(f(x), x, method="exact", create_graph=False)
    J = jacobian_per_sample(f, x.detach())
    torch.testing.assert_close(div, torch.diagonal(J, dim1=1, dim2=2).sum(1))
    torch.testing.assert_close(frobenius, J.pow(2).sum((1, 2)))
    torch.testing.assert_close(divergence(f(x), x, method="exact", create_graph=False), div)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(kind):
    """Each of P probes per sample gives v^T J v; their mean is tr(J) within 4 standard errors, and
    the mean of ||v^T J||^2 is ||J||_F^2 likewise (P rows per sample, each with its own probe)."""
    torch.manual_seed(1)
    W1, W2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)

    def f(y):
        return torch.tanh(y @ W1.T) @ W2.T

    x0 = torch.randn(2, 3, dtype=torch.float64)
    probes = 4000
    x = x0.repeat(probes, 1).requires_grad_(True)  # row p * 2 + b is sample b
    noise = sample_probe(x.shape, kind=kind, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    div, frobenius = divergence_and_frobenius(f(x), x, method="hutchinson", noise=noise, create_graph=False)
    J = jacobian_per_sample(f, x0)
    for estimate, truth in ((div, torch.diagonal(J, dim1=1, dim2=2).sum(1)), (frobenius, J.pow(2).sum((1, 2)))):
        values = estimate.reshape(probes, 2)
        standard_error = values.std(0) / math.sqrt(probes)
        assert torch.all((values.mean(0) - truth).abs() < 4 * standard_error + 1e-12)
    if kind == "rademacher":  # v^T J v with v_i^2 = 1: exact on a diagonal Jacobian, varies otherwise
        assert div.reshape(probes, 2).std(0).min() > 0


def test_hutchinson_with_several_probes_is_their_mean_and_needs_matching_noise():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    A = torch.randn(4, 4, dtype=torch.float64)
    f = torch.sin(x @ A.T)
    noise = sample_probe((5, 3, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    single = torch.stack([divergence(f, x, method="hutchinson", noise=v, create_graph=False) for v in noise])
    torch.testing.assert_close(divergence(f, x, method="hutchinson", noise=noise, create_graph=False), single.mean(0))
    with pytest.raises(ValueError, match="noise"):
        divergence(f, x, method="hutchinson", noise=torch.ones(3, 5), create_graph=False)
    with pytest.raises(ConfigError, match="exact"):
        divergence(f, x, method="trace", create_graph=False)
    with pytest.raises(ValueError, match="enable_grad"):
        with torch.no_grad():
            divergence(torch.sin(x), x, method="exact", create_graph=False)


def test_divergence_is_differentiable_with_create_graph():
    """d/dA div(Az) = d/dA tr(A) = I: the divergence's graph reaches the field's parameters."""
    A = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    div = divergence(torch.tanh(x) @ A.T * 0 + x @ A.T, x, method="exact", create_graph=True)
    (grad,) = torch.autograd.grad(div.sum(), A)
    torch.testing.assert_close(grad, 5 * torch.eye(3, dtype=torch.float64))


# -- the continuous flow ------------------------------------------------------------------------------


def linear_model(A, T=0.7, trace="auto", **fields):
    model = FFJORD(FFJORDConfig(time_length=T, trace=trace, **{**TIGHT, **fields}), VECTOR3).double().eval()
    model.transform.field = LinearField(A)
    return model


def test_linear_field_gives_the_closed_form_gaussian_density():
    """dz/dt = A z: z(T) = e^{AT} x and log|det| = T tr(A) exactly, so p(x) = N(x; 0, S) with
    S = e^{-AT} e^{-AT}^T; with the regularisers, int ||A z(t)||^2 dt by quadrature and
    int ||A||_F^2 dt = T ||A||_F^2."""
    torch.manual_seed(0)
    A, T = torch.randn(3, 3, dtype=torch.float64), 0.7
    model = linear_model(A, T)
    x = torch.randn(6, 3, dtype=torch.float64)
    inverse_map = torch.linalg.matrix_exp(-A * T)
    expected = D.MultivariateNormal(torch.zeros(3, dtype=torch.float64), inverse_map @ inverse_map.T).log_prob(x)
    torch.testing.assert_close(model.log_prob(x), expected, rtol=1e-7, atol=1e-7)
    z, log_det = model.transform(x)
    torch.testing.assert_close(z, x @ torch.linalg.matrix_exp(A * T).T, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(log_det, torch.full((6,), T * float(torch.trace(A)), dtype=torch.float64))

    model.train()
    loss = model.loss(Batch(x))
    times = torch.linspace(0, T, 2001, dtype=torch.float64)
    speeds = torch.stack([(x @ (A @ torch.linalg.matrix_exp(A * t)).T).pow(2).sum(1) for t in times])  # (2001, 6)
    kinetic = torch.trapezoid(speeds, times, dim=0).mean()
    torch.testing.assert_close(loss.terms["kinetic_energy"], kinetic, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss.terms["jacobian_frobenius"], T * A.pow(2).sum(), rtol=1e-7, atol=0)
    expected_total = -expected.mean() + 0.01 * kinetic + 0.01 * T * A.pow(2).sum()
    torch.testing.assert_close(loss.total, expected_total, rtol=1e-5, atol=0)
    assert loss.terms["nfe"] >= 6  # at least one dopri5 step


def test_linear_field_hutchinson_log_det_is_unbiased():
    """With one Rademacher probe v per sample, the log-det is T v^T A v: tr(A) T on average."""
    torch.manual_seed(2)
    A, T = torch.randn(3, 3, dtype=torch.float64), 0.5
    model = linear_model(A, T, trace="hutchinson")
    x = torch.randn(1, 3, dtype=torch.float64).repeat(3000, 1)
    _, log_det = model.transform(x)
    assert torch.unique(log_det.round(decimals=6)).numel() > 1  # the probes differ per sample
    standard_error = log_det.std() / math.sqrt(len(log_det))
    assert abs(float(log_det.detach().mean()) - T * float(torch.trace(A))) < 4 * standard_error
    # log_prob draws its probes from a fixed seed: the same x, the same number
    torch.testing.assert_close(model.log_prob(x[:5]), model.log_prob(x[:5]))


@pytest.mark.parametrize("adjoint", [False, True])
def test_round_trip_and_log_det_against_the_jacobian_of_the_solution_map(adjoint):
    flow = ContinuousFlow(random_mlp_field(2), trace="exact", rtol=1e-9, atol=1e-9, adjoint=adjoint).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    z, log_det = flow(x)
    assert (z - x).abs().max() > 0.1  # a non-trivial map
    x_back, log_det_inverse = flow.inverse(z)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-7)
    torch.testing.assert_close(log_det_inverse, -log_det, rtol=0, atol=1e-7)
    J = jacobian_per_sample(lambda y: flow(y)[0], x)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(J)[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(flow.integrate(z, flow.time_length, 0.0), x, rtol=0, atol=1e-7)


def test_image_field_round_trip_and_exact_log_det():
    torch.manual_seed(0)
    field = ConvVectorField(1, channels=4, blocks=1).double()
    with torch.no_grad():
        field.conv_out.weight.normal_(0.0, 0.3)
    flow = ContinuousFlow(field, trace="exact", rtol=1e-8, atol=1e-8).double()
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    z, log_det = flow(x)
    x_back, log_det_inverse = flow.inverse(z)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(log_det_inverse, -log_det, rtol=0, atol=1e-6)
    J = jacobian_per_sample(lambda y: flow(y)[0], x)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(J)[1], rtol=0, atol=1e-5)


def test_adjoint_and_direct_gradients_agree():
    x = torch.randn(6, 2, dtype=torch.float64)
    grads = {}
    for adjoint in (False, True):
        model = FFJORD(FFJORDConfig(hidden=(8, 8), adjoint=adjoint, **TIGHT), TOY2).double().train()
        model.transform.field = random_mlp_field(2, hidden=(8, 8), seed=3)
        loss = model.loss(Batch(x))
        model.zero_grad()
        loss.total.backward()
        grads[adjoint] = torch.cat([p.grad.reshape(-1) for p in model.transform.field.parameters()])
        assert loss.terms["nfe"] > 0
    assert grads[False].abs().max() > 1e-3
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-5, atol=1e-7)


# -- training and the registry --------------------------------------------------------------------------


def test_short_fit_approaches_the_entropy_of_a_gaussian():
    """x ~ N(0, diag(0.5^2, 2^2)), entropy H = log(2 pi e) + log(0.5 * 2) = 2.838 nats. The flow
    starts as the identity (NLL 3.96 under N(0, I)); 60 Adam steps reach H + 0.02 (measured). The
    test NLL's standard error is sqrt(Var[-log p]) / sqrt(2000) = 1 / sqrt(2000) = 0.022 nats (for the
    true density Var[-log p] = D / 2), so H +- 0.1 allows the fit's gap and 4 standard errors; by
    Gibbs' inequality no model's expected NLL is below H."""
    torch.manual_seed(0)
    scales = torch.tensor([0.5, 2.0])
    train, test = torch.randn(4096, 2) * scales, torch.randn(2000, 2) * scales
    entropy = math.log(2 * math.pi * math.e) + float(torch.log(scales).sum())
    model = FFJORD(FFJORDConfig(hidden=(16, 16)), TOY2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        loss = model.loss(Batch(train[torch.randint(len(train), (128,))]))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        nll = -model.log_prob(test).mean().item()
    assert entropy - 0.1 < nll < entropy + 0.1, (nll, entropy)


def test_registry_build_train_sample_save_load(tmp_path):
    data = genlab.data.load("8gaussians", n=512)
    model = genlab.create("ffjord", data=data, hidden=(16, 16))
    assert isinstance(model, FFJORD) and model.transform.trace == "exact" and model.exact_likelihood
    run = genlab.fit(model, data, max_steps=3, batch_size=64, out=tmp_path / "run", progress=False, tensorboard=False, num_samples=8)
    samples = run.model.sample(10, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (10, 2) and torch.isfinite(samples).all()
    torch.testing.assert_close(samples, run.model.sample(10, generator=torch.Generator().manual_seed(0)))
    x = data.split("test").tensors()[0][:16]
    assert all(row["nfe"] > 0 for row in run.history if row["split"] == "train")
    loaded = genlab.load(tmp_path / "run")  # the EMA weights
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x), run.sampling_model.log_prob(x))


def test_digits_images_train_step_sample_and_bits_per_dim():
    """Images: the convolutional field with the Hutchinson trace, logit preprocessing and uniform
    dequantization; a gradient step, samples on the data's levels, finite log-densities."""
    spec = DataSpec("digits-like", kind="image", shape=(1, 8, 8), value_range=(0.0, 1.0), levels=17)
    model = FFJORD(FFJORDConfig(channels=8, blocks=1), spec)
    assert model.transform.trace == "hutchinson" and model.likelihood_kind() == "dequantized"
    x = torch.randint(0, 17, (4, 1, 8, 8)).float() / 16
    loss = model.loss(Batch(x))
    loss.total.backward()
    assert torch.isfinite(loss.total) and float(loss.terms["bits_per_dim"]) > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        log_p = model.log_prob(x)
        torch.testing.assert_close(log_p, model.log_prob(x))  # fixed dequantization and probe seeds
        samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(log_p).all() and samples.shape == (3, 1, 8, 8)
    torch.testing.assert_close(samples * 16, (samples * 16).round())


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="step_size"):
        FFJORDConfig(solver="rk4")
    with pytest.raises(ConfigError, match="trace"):
        FFJORDConfig(trace="exactly")
    with pytest.raises(ConfigError, match="class_conditional"):
        FFJORDConfig(class_conditional=True)
    fixed = FFJORD(FFJORDConfig(solver="rk4", step_size=0.25, hidden=(8,)), TOY2)
    fixed.loss(Batch(torch.randn(4, 2)))
    assert fixed.transform.last_solve.nfe == 4 * 4  # rk4: four evaluations per step, T / h = 4 steps
