"""Flow layers against the change-of-variables mathematics: every bijection inverts exactly, its
log-det equals log|det| of the autograd Jacobian, and the inverse's log-det is minus the forward's;
plus ActNorm's data-dependent initialisation, the LU factorisation of the 1x1 convolution, the
coupling masks, and the variational dequantizer's density (it integrates to one)."""

import math

import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.flows.base import CenterTransform, Compose, Identity, Inverse, LogitTransform
from genlab.models.flows.layers import (
    ActNorm,
    InvertibleConv1x1,
    Permutation,
    Sigmoid,
    Squeeze,
    VariationalDequantizer,
    coupling_layer,
    coupling_mask,
    data_initialization,
    multi_scale,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _perturbed(bijection, seed=0, scale=0.3):
    """float64, with every parameter moved off its initial value (zero-initialised conditioners
    would make a coupling the identity and the test unable to fail)."""
    bijection = bijection.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bijection.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return bijection


def _vector_context(batch=3, dim=3, seed=1):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _multi_scale_realnvp_like():
    def block(level, shape):
        c, h, w = shape
        if level == 1:
            return Compose(ActNorm(c), coupling_layer(shape, "checkerboard", 0, channels=4, blocks=1)), shape
        sq = (4 * c, h // 2, w // 2)
        layers = [coupling_layer(shape, "checkerboard", 1, channels=4, blocks=1), Squeeze(), coupling_layer(sq, "channel", 0, channels=4, blocks=1)]
        return Compose(*layers), sq

    return multi_scale((1, 4, 4), 2, block)


def _multi_scale_glow_like():
    def block(level, shape):
        c, h, w = shape
        sq = (4 * c, h // 2, w // 2)
        layers = [Squeeze(), ActNorm(sq[0]), InvertibleConv1x1(sq[0], seed=level), coupling_layer(sq, "channel", 0, channels=4, blocks=1)]
        if level == 0:  # the learned prior on the factored-out half
            layers.append(coupling_layer(sq, "channel", 1, channels=4, blocks=1))
        return Compose(*layers), sq

    return multi_scale((1, 4, 4), 2, block)


def _dequantizer_flow(shape, context_dim=None):
    """The variational dequantizer's flow eps -> u with its context built from a fixed x."""
    deq = _perturbed(VariationalDequantizer(shape, context_dim=context_dim, couplings=2, channels=4, hidden=(8,)), scale=0.2)
    g = torch.Generator().manual_seed(5)
    x_unit = torch.randint(0, 17, (3, *shape), generator=g).double() / 16
    label = None if context_dim is None else torch.nn.functional.one_hot(torch.tensor([0, 1, 1]), context_dim).double()
    return deq.flow, shape, deq.conditioning(x_unit, label)


# name -> () -> (bijection, sample shape, context or None, input sampler)
def _normal(shape, seed=2):
    return torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _in_box(shape, low=-1.0, high=3.0, seed=2):
    u = torch.rand(3, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return low + (high - low) * (0.02 + 0.96 * u)


CASES = {
    "actnorm-vector": lambda: (_perturbed(ActNorm(3)), (3,), None, _normal),
    "actnorm-image": lambda: (_perturbed(ActNorm(2)), (2, 3, 3), None, _normal),
    "lu-linear-vector": lambda: (_perturbed(InvertibleConv1x1(3, seed=1), scale=0.1), (3,), None, _normal),
    "invconv1x1-image": lambda: (_perturbed(InvertibleConv1x1(3, seed=2), scale=0.1), (3, 2, 2), None, _normal),
    "affine-half": lambda: (_perturbed(coupling_layer((4,), "half", 0, hidden=(8,))), (4,), None, _normal),
    "affine-half-flipped": lambda: (_perturbed(coupling_layer((5,), "half", 1, hidden=(8,))), (5,), None, _normal),
    "affine-alternating": lambda: (_perturbed(coupling_layer((4,), "alternating", 1, hidden=(8,))), (4,), None, _normal),
    "affine-sigmoid-scale": lambda: (_perturbed(coupling_layer((4,), "alternating", 0, hidden=(8,), scale="sigmoid")), (4,), None, _normal),
    "affine-vector-context": lambda: (
        _perturbed(coupling_layer((4,), "alternating", 0, hidden=(8,), context_dim=3)), (4,), _vector_context(), _normal),
    "affine-checkerboard": lambda: (_perturbed(coupling_layer((2, 4, 4), "checkerboard", 0, channels=4, blocks=1)), (2, 4, 4), None, _normal),
    "affine-checkerboard-odd": lambda: (_perturbed(coupling_layer((1, 4, 4), "checkerboard", 1, channels=4, blocks=1)), (1, 4, 4), None, _normal),
    "affine-channel": lambda: (_perturbed(coupling_layer((4, 2, 2), "channel", 1, channels=4, blocks=1)), (4, 2, 2), None, _normal),
    "affine-image-context": lambda: (
        _perturbed(coupling_layer((2, 4, 4), "checkerboard", 0, channels=4, blocks=1, context_dim=3)), (2, 4, 4), _vector_context(), _normal),
    "additive-alternating": lambda: (_perturbed(coupling_layer((4,), "alternating", 0, kind="additive", hidden=(8,))), (4,), None, _normal),
    "additive-checkerboard": lambda: (
        _perturbed(coupling_layer((1, 4, 4), "checkerboard", 0, kind="additive", channels=4, blocks=1)), (1, 4, 4), None, _normal),
    "additive-channel": lambda: (_perturbed(coupling_layer((4, 2, 2), "channel", 0, kind="additive", channels=4, blocks=1)), (4, 2, 2), None, _normal),
    "permutation-reverse": lambda: (Permutation(4, "reverse").double(), (4,), None, _normal),
    "permutation-random-channels": lambda: (Permutation(3, "random", seed=3).double(), (3, 2, 2), None, _normal),
    "squeeze": lambda: (Squeeze(), (2, 4, 4), None, _normal),
    "multi-scale-realnvp": lambda: (_perturbed(_multi_scale_realnvp_like(), scale=0.1), (1, 4, 4), None, _normal),
    "multi-scale-glow-prior": lambda: (_perturbed(_multi_scale_glow_like(), scale=0.1), (1, 4, 4), None, _normal),
    "compose": lambda: (
        _perturbed(Compose(ActNorm(3), InvertibleConv1x1(3), coupling_layer((3,), "half", 0, hidden=(8,))), scale=0.1), (3,), None, _normal),
    "inverse": lambda: (
        _perturbed(Inverse(Compose(ActNorm(3), coupling_layer((3,), "alternating", 0, hidden=(8,)))), scale=0.1), (3,), None, _normal),
    "identity": lambda: (Identity(), (3,), None, _normal),
    "logit": lambda: (LogitTransform(-1.0, 3.0, alpha=0.05), (2, 2, 2), None, _in_box),
    "logit-no-alpha": lambda: (LogitTransform(-1.0, 3.0, alpha=0.0), (3,), None, _in_box),
    "center": lambda: (CenterTransform(-1.0, 3.0), (2, 2, 2), None, _in_box),
    "sigmoid": lambda: (Sigmoid(), (3,), None, _normal),
    "dequantizer-flow-vector": lambda: (*_dequantizer_flow((3,), context_dim=2), _normal),
    "dequantizer-flow-image": lambda: (*_dequantizer_flow((2, 2, 2)), _normal),
}


def _jacobian_log_det(bijection, x, context):
    """log|det df/dx| per sample from the autograd Jacobian, flattened to (D, D)."""
    values = []
    for i in range(x.shape[0]):
        ctx = None if context is None else context[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: bijection(v.reshape(1, *x.shape[1:]), ctx)[0].reshape(-1), x[i].reshape(-1))
        values.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(values)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bijection_inverts_and_log_det_matches_autograd_jacobian(name):
    bijection, shape, context, draw = CASES[name]()
    x = draw(shape)
    y, log_det = bijection(x, context)
    assert log_det.shape == (3,)
    x_back, inverse_log_det = bijection.inverse(y, context)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_det, _jacobian_log_det(bijection, x, context), rtol=0, atol=1e-9)


def test_a_perturbed_coupling_is_not_the_identity_and_a_fresh_one_is():
    """The zero-initialised last layer makes each coupling start as the identity (so the tests above
    must perturb it to test anything)."""
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    fresh = coupling_layer((2, 4, 4), "checkerboard", 0, channels=4, blocks=1).double()
    y, log_det = fresh(x)
    assert torch.equal(y, x) and torch.equal(log_det, torch.zeros(4, dtype=torch.float64))
    y, log_det = _perturbed(fresh)(x)
    mask = fresh.mask.bool().expand_as(x)
    assert torch.equal(y[mask], x[mask])  # the passed-through half is untouched
    assert (y[~mask] - x[~mask]).abs().min() > 0 and log_det.abs().min() > 0


def test_coupling_masks():
    board = coupling_mask((2, 3, 4), "checkerboard", 0)
    assert board[0].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]] and torch.equal(board[0], board[1])
    assert torch.equal(coupling_mask((2, 3, 4), "checkerboard", 1), 1 - board)
    assert coupling_mask((4, 1, 1), "channel", 0).flatten().tolist() == [1, 1, 0, 0]
    assert coupling_mask((5,), "half", 0).tolist() == [1, 1, 0, 0, 0]
    assert coupling_mask((5,), "alternating", 1).tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ConfigError, match="checkerboard"):
        coupling_mask((4,), "checkerboard")
    with pytest.raises(ConfigError, match="at least 2 channels"):
        coupling_mask((1, 4, 4), "channel")


def test_affine_scale_is_bounded():
    """log s = 3 tanh(h / 3) stays below 3 for a large conditioner output (h = 30: log s = 3 tanh(10))."""
    layer = coupling_layer((2,), "half", 0, hidden=(4,)).double()
    with torch.no_grad():
        layer.conditioner.net.net[-1].bias.copy_(torch.tensor([0.0, 30.0, 0.0, 0.0]))
    _, log_det = layer(torch.randn(3, 2, dtype=torch.float64))
    assert torch.all(log_det < 3.0) and torch.all(log_det > 2.99)


@pytest.mark.parametrize("shape", [(5,), (3, 4, 4)])
def test_actnorm_data_initialisation_standardises_its_batch(shape):
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.5 * torch.randn(256, *shape, generator=g, dtype=torch.float64) * torch.arange(1, shape[0] + 1).view(-1, *[1] * (len(shape) - 1))
    flow = Compose(ActNorm(shape[0]), InvertibleConv1x1(shape[0], seed=1), ActNorm(shape[0])).double()
    with torch.no_grad(), data_initialization(flow):
        flow(x)
    first = flow.bijections[0]
    reduce = [d for d in range(x.dim()) if d != 1]
    h, _ = first(x)
    torch.testing.assert_close(h.mean(reduce), torch.zeros(shape[0], dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(h.std(reduce, unbiased=False), torch.ones(shape[0], dtype=torch.float64), rtol=0, atol=1e-5)
    # the last ActNorm was initialised on what the layers before it output, so the stack's output is standardised
    y, _ = flow(x)
    torch.testing.assert_close(y.mean(reduce), torch.zeros(shape[0], dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(y.std(reduce, unbiased=False), torch.ones(shape[0], dtype=torch.float64), rtol=0, atol=1e-5)
    # outside the block, forward passes leave the statistics alone
    before = [p.clone() for p in flow.parameters()]
    flow(x[:7] * 10)
    assert all(torch.equal(a, b) for a, b in zip(before, flow.parameters()))


def test_lu_parameterisation_reconstructs_an_orthogonal_initial_weight():
    conv = InvertibleConv1x1(5, seed=3).double()
    w = conv.weight()
    torch.testing.assert_close(w @ w.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-6)  # float32 buffers at init
    # W = P L (U + diag(s)) with L unit lower and U strictly upper triangular
    lower = torch.tril(conv.lower, -1) + torch.eye(5, dtype=torch.float64)
    upper = torch.triu(conv.upper, 1) + torch.diag(conv.sign_s * conv.log_abs_s.exp())
    torch.testing.assert_close(w, conv.permutation @ lower @ upper)
    # the parameters below/above the diagonals do not leak into W (they are masked)
    with torch.no_grad():
        conv.lower.add_(torch.triu(torch.ones(5, 5, dtype=torch.float64)))
        conv.upper.add_(torch.tril(torch.ones(5, 5, dtype=torch.float64)))
    torch.testing.assert_close(conv.weight(), w)
    # log|det| of the convolution on H x W pixels = H W log|det W|, also after training moves the factors
    _perturbed(conv, scale=0.2)
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64)
    _, log_det = conv(x)
    expected = 6 * torch.linalg.slogdet(conv.weight())[1]
    torch.testing.assert_close(log_det, expected.expand(2), rtol=0, atol=1e-10)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    assert y.shape == (1, 4, 2, 2)
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # the top-left block, row by row
    with pytest.raises(ConfigError, match="even"):
        Squeeze()(torch.zeros(1, 1, 3, 4))


def test_multi_scale_factors_out_the_finest_half_first():
    """With identity blocks, the latent of the multi-scale stack is [squeezed channels 0-1 at 2x2,
    then the rest]: the factored-out half skips every later layer."""
    flow = _multi_scale_glow_like().double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    z, _ = flow(x)
    squeezed, _ = Squeeze()(x)
    h, _ = flow.block(x)
    assert z.shape == (2, 16)
    torch.testing.assert_close(z[:, :8], h[:, :2].reshape(2, -1))
    # perturbing the coarse scale's layers changes only the last 8 latent entries
    _perturbed(flow.inner)
    z2, _ = flow(x)
    assert torch.equal(z2[:, :8], z[:, :8]) and not torch.allclose(z2[:, 8:], z[:, 8:])


def test_logit_preprocessing_log_det_closed_form():
    """RealNVP's logit: log|det| = sum log((1 - 2 alpha) / (b - a)) - log p - log(1 - p)."""
    x = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    y, log_det = LogitTransform(0.0, 1.0, alpha=0.05)(x)
    p = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    torch.testing.assert_close(y[0], torch.log(p / (1 - p)))
    torch.testing.assert_close(log_det[0], (math.log(0.9) - torch.log(p * (1 - p))).sum())


def test_variational_dequantizer_density_integrates_to_one_and_matches_its_samples():
    torch.manual_seed(0)
    deq = _perturbed(VariationalDequantizer((2,), couplings=2, hidden=(8,)), scale=0.3)
    x_unit = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    n = 400  # midpoint rule on [0, 1]^2
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    u = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    density = deq.log_prob(u, x_unit.expand(len(u), 2)).exp()
    assert abs(density.mean().item() - 1.0) < 5e-3
    # the log q returned with a draw is the density at that draw, and it differs from x to x
    u, log_q = deq(x_unit.expand(5, 2), generator=torch.Generator().manual_seed(1))
    assert torch.all((u > 0) & (u < 1))
    torch.testing.assert_close(log_q, deq.log_prob(u, x_unit.expand(5, 2)), rtol=0, atol=1e-10)
    other = deq.log_prob(u, torch.tensor([[0.5, 0.0]], dtype=torch.float64).expand(5, 2))
    assert not torch.allclose(other, log_q)
