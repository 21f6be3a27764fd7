"""Masked layers checked by their gradients: MADE's autoregressive property for any ordering and
connectivity, the masked convolutions' raster and colour order, and the gated stacks' receptive field."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from genlab.errors import ConfigError
from genlab.nn.masked import (
    MADE,
    GatedPixelCNNLayer,
    MaskedConv2d,
    MaskedLinear,
    centre_channel_mask,
    gated_activation,
    made_degrees,
    shift_down,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def made_jacobian(made: MADE, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """d output[i, k] / d x[j] at one point, (D, K, D)."""
    return jacobian(lambda v: made(v[None], context)[0], x)


def allowed(order: torch.Tensor) -> torch.Tensor:
    """(D, D): [order[j] < order[i]], the inputs j output i may read."""
    return order[None, :] < order[:, None]


# -- MaskedLinear ------------------------------------------------------------------------------
def test_masked_linear_is_a_linear_map_with_the_masked_weights():
    layer = MaskedLinear(4, 3, context_features=2).double()
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.double)
    layer.set_mask(mask)
    x, c = torch.randn(5, 4, dtype=torch.double), torch.randn(5, 2, dtype=torch.double)
    expected = x @ (layer.weight * mask).T + layer.bias + c @ layer.context.weight.T
    torch.testing.assert_close(layer(x, c), expected)
    layer(x, c).sum().backward()
    assert (layer.weight.grad[mask == 0] == 0).all()
    assert "mask" not in layer.state_dict()  # rebuilt from the ordering, not saved


# -- MADE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden", [(12,), (7, 9), (30, 5, 16)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_made_output_i_depends_exactly_on_earlier_inputs(hidden, seed):
    """d out_i / d x_j == 0 whenever order[j] >= order[i]; with cyclic degrees and every layer at
    least D - 1 wide, every allowed connection exists (tanh: no dead units)."""
    D = 6
    order = torch.randperm(D, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    made = MADE(D, hidden, outputs_per_feature=2, order=order, activation="tanh").double()
    J = made_jacobian(made, torch.randn(D, dtype=torch.double))  # (D, K, D)
    ok = allowed(order)[:, None, :].expand_as(J)
    assert (J[~ok] == 0).all()
    if min(hidden) >= D - 1:
        assert (J[ok] != 0).all()
    else:  # narrow layers drop some connections, but never all of them
        assert (J[ok] != 0).any()


def test_made_resampled_orderings_and_connectivity_stay_autoregressive():
    """Order- and connectivity-agnostic masks (Germain et al. sec. 4): each new mask obeys its own ordering."""
    D = 5
    made = MADE(D, (16, 16), outputs_per_feature=1, activation="tanh", seed=3).double()
    x = torch.randn(D, dtype=torch.double)
    orders = set()
    for index in range(1, 6):
        made.set_mask_index(index)
        J = made_jacobian(made, x)[:, 0]
        assert (J[~allowed(made.order)] == 0).all()
        assert (J[allowed(made.order)] != 0).any()
        orders.add(tuple(made.order.tolist()))
    assert len(orders) > 1  # the orderings really change
    made.set_mask_index(0)
    assert made.order.tolist() == list(range(D))
    generator = torch.Generator().manual_seed(0)
    made.resample_masks(generator, order=False)  # new connectivity, same ordering
    J = made_jacobian(made, x)[:, 0]
    assert made.order.tolist() == list(range(D)) and (J[~allowed(made.order)] == 0).all()


def test_made_random_degrees_follow_germain_rule():
    """m^l(k) ~ U{min m^{l-1}, ..., D-1}: every layer's degrees lie in that range."""
    g = torch.Generator().manual_seed(0)
    degrees = made_degrees(7, (20, 20, 20), torch.arange(7), generator=g)
    for previous, current in zip(degrees[1:], degrees[2:]):
        assert current.min() >= previous.min() and current.max() <= 6
    assert degrees[1].min() >= 1


def test_made_context_reaches_every_output_even_the_first():
    D, C = 4, 3
    order = torch.tensor([2, 0, 3, 1])
    made = MADE(D, (10, 10), outputs_per_feature=2, context_features=C, order=order, activation="tanh").double()
    x, c = torch.randn(1, D, dtype=torch.double), torch.randn(1, C, dtype=torch.double)
    Jc = jacobian(lambda cc: made(x, cc)[0], c)[:, :, 0, :]  # (D, K, C)
    assert (Jc.abs().sum(-1) > 0).all()
    J = made_jacobian(made, x[0], c)  # context units (degree 0) must not open a path from x_i to out_i
    assert (J[~allowed(order)[:, None, :].expand_as(J)] == 0).all()
    with pytest.raises(ValueError, match="pass context"):
        made(x)


def test_made_rejects_an_order_that_is_not_a_permutation():
    with pytest.raises(ConfigError, match="permutation"):
        MADE(3, (8,), order=torch.tensor([0, 0, 2]))


def test_made_single_feature_is_unconditional():
    made = MADE(1, (4,), outputs_per_feature=3)
    out = made(torch.randn(6, 1))
    torch.testing.assert_close(out, out[:1].expand_as(out))


# -- masked convolutions ------------------------------------------------------------------------
def earlier(i, j, c, shape):
    """(C, H, W) bool: positions strictly before (i, j, c) in raster order, colours innermost."""
    C, H, W = shape
    ii = torch.arange(H)[None, :, None].expand(C, H, W)
    jj = torch.arange(W)[None, None, :].expand(C, H, W)
    cc = torch.arange(C)[:, None, None].expand(C, H, W)
    return (ii < i) | ((ii == i) & (jj < j)) | ((ii == i) & (jj == j) & (cc < c))


def test_centre_channel_masks_follow_rgb_order():
    a = centre_channel_mask(6, 3, 3, "A")  # out groups (0,0,1,1,2,2), in groups (0,1,2)
    b = centre_channel_mask(6, 3, 3, "B")
    assert a.tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]]
    assert b.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    with pytest.raises(ConfigError, match="multiple of 3"):
        centre_channel_mask(4, 3, 3, "B")


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_sees_only_earlier_pixels_and_colours(mask_type):
    """An output of colour group g at (i, j) reads the pixels before (i, j) (all colours) and, at
    (i, j) itself, colours < g (type A) or <= g (type B); nothing else."""
    shape = (3, 5, 5)
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 6, 5, mask_type=mask_type, groups=3).double()
    x = torch.randn(1, *shape, dtype=torch.double)
    J = jacobian(lambda v: conv(v)[0], x)[:, :, :, 0]  # (6, 5, 5, 3, 5, 5)
    for out_channel in range(6):
        g = out_channel // 2
        for i in range(5):
            for j in range(5):
                reads = earlier(i, j, g + (mask_type == "B"), shape)
                within_kernel = torch.zeros(shape, dtype=torch.bool)
                within_kernel[:, max(0, i - 2) : i + 3, max(0, j - 2) : j + 3] = True
                grad = J[out_channel, i, j]
                assert (grad[~reads] == 0).all()
                assert (grad[reads & within_kernel] != 0).all()


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_dilated_masked_conv_reads_exactly_its_earlier_taps(mask_type):
    """With dilation d, output (i, j) reads the taps (i - d a, j - d b), |a|, |b| <= k // 2, that come
    before it in raster order (the centre by the colour rule), and no other pixel."""
    shape, d = (1, 9, 9), 3
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 2, 3, mask_type=mask_type, dilation=d).double()
    x = torch.randn(1, *shape, dtype=torch.double)
    assert conv(x).shape == (1, 2, 9, 9)
    J = jacobian(lambda v: conv(v)[0], x)[:, :, :, 0]  # (2, 9, 9, 1, 9, 9)
    for i in range(9):
        for j in range(9):
            taps = torch.zeros(shape, dtype=torch.bool)
            for a in (-1, 0, 1):
                for b in (-1, 0, 1):
                    if 0 <= i + d * a < 9 and 0 <= j + d * b < 9:
                        taps[0, i + d * a, j + d * b] = True
            reads = earlier(i, j, 0 + (mask_type == "B"), shape) & taps
            grad = J[:, i, j].abs().sum(0)
            assert torch.equal(grad != 0, reads), (i, j)


@pytest.mark.parametrize("dilation", [1, 2])
def test_masked_conv_rows_below_do_not_matter(dilation):
    """Output rows 0..i equal those computed from the image cropped to rows 0..i (used by sampling)."""
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 4, 3, mask_type="B", groups=2, dilation=dilation)
    x = torch.randn(3, 2, 6, 5)
    full = conv(x)
    for i in range(6):
        torch.testing.assert_close(conv(x[:, :, : i + 1]), full[:, :, : i + 1])


def test_masked_conv_rejects_even_kernels():
    with pytest.raises(ConfigError, match="odd"):
        MaskedConv2d(1, 4, 4, mask_type="A")
    with pytest.raises(ConfigError, match="'A'"):
        MaskedConv2d(1, 4, 3, mask_type="C")


# -- gated stacks ----------------------------------------------------------------------------------
def test_gated_activation_is_tanh_times_sigmoid_within_each_colour_group():
    x = torch.randn(2, 12, 3, 3, dtype=torch.double)
    a, b = x.view(2, 3, 2, 2, 3, 3).unbind(2)  # per group: first half a, second half b
    expected = (torch.tanh(a) * torch.sigmoid(b)).reshape(2, 6, 3, 3)
    torch.testing.assert_close(gated_activation(x, groups=3), expected)
    a1, b1 = x.chunk(2, dim=1)
    torch.testing.assert_close(gated_activation(x, groups=1), torch.tanh(a1) * torch.sigmoid(b1))


def test_shift_down_moves_rows():
    x = torch.arange(6.0).view(1, 1, 3, 2)
    assert shift_down(x)[0, 0].tolist() == [[0, 0], [0, 1], [2, 3]]


def gated_stack(shape, layers, kernel=3, cond_dim=0):
    C = shape[0]
    torch.manual_seed(0)
    first = GatedPixelCNNLayer(C, 6 * C, kernel, first=True, groups=C, cond_dim=cond_dim)
    rest = [GatedPixelCNNLayer(6 * C, 6 * C, kernel, first=False, groups=C, cond_dim=cond_dim) for _ in range(layers)]
    stack = torch.nn.ModuleList([first, *rest]).double()

    def run(x, cond=None):
        v, h = x, x
        for layer in stack:
            v, h = layer(v, h, cond)
        return h  # (B, 6C, H, W): colour group g = channels [6g, 6g + 6)

    return run


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 4)])
def test_gated_stack_is_causal_and_has_no_blind_spot(shape):
    """h at (i, j) of colour group g reads exactly the positions before (i, j, g), once the stack is
    deep enough to reach them: the pixels up and to the right included (no blind spot)."""
    C, H, W = shape
    run = gated_stack(shape, layers=4)
    x = torch.randn(1, *shape, dtype=torch.double)
    J = jacobian(lambda v: run(v)[0], x)[:, :, :, 0]  # (6C, H, W, C, H, W)
    for g in range(C):
        for i in range(H):
            for j in range(W):
                grad = J[6 * g : 6 * (g + 1), i, j].abs().sum(0)
                reads = earlier(i, j, g, shape)
                assert (grad[~reads] == 0).all()
                assert (grad[reads] != 0).all(), f"blind spot at {(g, i, j)}"


def test_gated_stack_rows_below_do_not_matter_and_labels_enter():
    run = gated_stack((1, 6, 5), layers=2, cond_dim=3)
    x = torch.randn(2, 1, 6, 5, dtype=torch.double)
    cond = F.one_hot(torch.tensor([0, 2]), 3).double()
    full = run(x, cond)
    for i in range(6):
        torch.testing.assert_close(run(x[:, :, : i + 1], cond), full[:, :, : i + 1])
    other = run(x, F.one_hot(torch.tensor([1, 1]), 3).double())
    assert (other[:, :, 0, 0] - full[:, :, 0, 0]).abs().max() > 1e-6  # even the first pixel sees the label
