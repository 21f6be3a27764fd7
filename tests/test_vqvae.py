"""The VQ-VAE's quantizer against its definitions: nearest codes, the straight-through gradient (the
identity from z_q back to z_e, all the way into the encoder), the losses' stop-gradients, the EMA
codebook as the closed-form running average, dead-code restarts moving only the dead codes, the
perplexity, and a short fit on digits whose codebook usage rises from collapse above a stated floor."""

import math

import pytest
import torch
from torch import distributions as D

import genlab
from genlab.models.latent.vqvae import VQVAE, VQVAEConfig, VectorQuantizer, perplexity

pytestmark = pytest.mark.usefixtures("one_thread")


def _quantizer(**options):
    torch.manual_seed(0)
    return VectorQuantizer(5, 3, **options).double()


def test_nearest_code_is_the_argmin_of_distances_and_quantized_values_are_codes():
    vq = _quantizer(codebook_update="loss").eval()
    z = torch.randn(4, 3, 6, 2, dtype=torch.float64)
    out = vq(z)
    flat = z.movedim(1, -1).reshape(-1, 3)
    torch.testing.assert_close(out.indices.flatten(), torch.cdist(flat, vq.codebook.detach()).argmin(1))
    torch.testing.assert_close(out.quantized, vq.codebook.detach()[out.indices].movedim(-1, 1), rtol=0, atol=1e-15)


def test_straight_through_gradient_is_the_identity_from_z_q_to_z_e():
    vq = _quantizer(codebook_update="loss").eval()
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, dtype=torch.float64)
    (vq(z).quantized * w).sum().backward()
    torch.testing.assert_close(z.grad, w, rtol=0, atol=0)


def test_straight_through_gradient_reaches_the_encoder():
    """d recon / d encoder weights by autograd through the quantizer equals the chain rule with the
    decoder's input gradient passed to z_e unchanged (the straight-through estimator)."""
    data = genlab.data.load("digits")
    x = data.split("train").tensors()[0][:16]
    model = VQVAE(VQVAEConfig(num_codes=8, code_dim=4, net="mlp", hidden=(32,), prior="categorical", restart_after=0), data.spec).eval()
    out = model.quantize(model.encode(x))
    model.reconstruction_cost(x, model.decoder(out.quantized)).sum().backward()
    through = [p.grad.clone() for p in model.encoder.parameters()]
    assert all(bool(g.abs().sum() > 0) for g in through)
    model.zero_grad()
    z_q = model.quantizer.lookup(out.indices).detach().requires_grad_(True)
    model.reconstruction_cost(x, model.decoder(z_q)).sum().backward()
    model.encode(x).backward(z_q.grad)  # the chain rule with dz_q/dz_e = I
    for a, p in zip(through, model.encoder.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_codebook_and_commitment_losses_stop_the_right_gradients():
    vq = _quantizer(codebook_update="loss").eval()
    z = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    out = vq(z)
    torch.testing.assert_close(out.commitment_loss, (z - vq.codebook[out.indices]).pow(2).mean())
    torch.testing.assert_close(out.codebook_loss, out.commitment_loss)  # same value, different gradients
    out.codebook_loss.backward(retain_graph=True)
    assert z.grad is None and vq.codebook.grad.abs().sum() > 0  # moves the codes only
    vq.codebook.grad = None
    out.commitment_loss.backward()
    assert vq.codebook.grad is None and z.grad.abs().sum() > 0  # moves the encoder only


def _set_codebook(vq, codes):
    with torch.no_grad():
        vq.codebook.copy_(codes)
        vq.ema_embed_sum.copy_(codes)
        vq.ema_cluster_size.fill_(1.0)


def test_ema_codebook_is_the_closed_form_running_average_on_a_fixed_assignment():
    gamma, eps, k = 0.9, 1e-3, 3
    vq = VectorQuantizer(k, 2, codebook_update="ema", decay=gamma, epsilon=eps).double().train()
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    _set_codebook(vq, centres)  # N_k = 1, m_k = e_k
    g = torch.Generator().manual_seed(0)
    counts_seen, sums_seen = [], []
    for step in range(6):
        labels = torch.tensor([0] * (2 + step) + [1] * 3 + [2] * (5 - step))  # changing counts, fixed clusters
        z = centres[labels] + 0.3 * torch.randn(len(labels), 2, generator=g, dtype=torch.float64)
        out = vq(z)
        torch.testing.assert_close(out.indices, labels)  # the assignment stays fixed
        counts_seen.append(torch.bincount(labels, minlength=k).double())
        sums_seen.append(torch.zeros(k, 2, dtype=torch.float64).index_add_(0, labels, z))
    t = len(counts_seen)
    # N_T = gamma^T N_0 + (1 - gamma) sum_t gamma^(T - t) n_t, and the same for m
    n_ema = gamma**t * torch.ones(k, dtype=torch.float64) + sum((1 - gamma) * gamma ** (t - 1 - i) * c for i, c in enumerate(counts_seen))
    m_ema = gamma**t * centres + sum((1 - gamma) * gamma ** (t - 1 - i) * s for i, s in enumerate(sums_seen))
    total = n_ema.sum()
    smoothed = (n_ema + eps) / (total + k * eps) * total
    torch.testing.assert_close(vq.ema_cluster_size, n_ema, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vq.codebook, m_ema / smoothed[:, None], rtol=1e-12, atol=1e-12)
    # no update outside training
    before = vq.codebook.clone()
    vq.eval()(torch.randn(4, 2, dtype=torch.float64))
    torch.testing.assert_close(vq.codebook, before, rtol=0, atol=0)


def test_dead_code_restart_moves_only_the_unused_codes():
    codes = torch.tensor([[0.0, 0.0], [5.0, 0.0], [100.0, 100.0], [-100.0, 100.0]], dtype=torch.float64)
    restarting = VectorQuantizer(4, 2, codebook_update="ema", decay=0.8, restart_after=2).double().train()
    plain = VectorQuantizer(4, 2, codebook_update="ema", decay=0.8, restart_after=0).double().train()
    for vq in (restarting, plain):
        _set_codebook(vq, codes)
    g = torch.Generator().manual_seed(0)
    batches = [torch.cat([torch.randn(6, 2, generator=g, dtype=torch.float64), 5 + torch.randn(6, 2, generator=g, dtype=torch.float64)]) for _ in range(2)]
    restarting(batches[0]), plain(batches[0])
    torch.testing.assert_close(restarting.codebook, plain.codebook, rtol=0, atol=0)  # unused for one step only
    assert restarting.unused_steps.tolist() == [0, 0, 1, 1]
    torch.manual_seed(1)
    restarting(batches[1]), plain(batches[1])
    torch.testing.assert_close(restarting.codebook[:2], plain.codebook[:2], rtol=0, atol=0)  # live codes: the EMA alone
    for row in restarting.codebook[2:]:  # dead codes: now a vector of the batch
        assert any(bool(torch.equal(row, v)) for v in batches[1])
    assert restarting.unused_steps.tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(restarting.ema_cluster_size[2:], torch.ones(2, dtype=torch.float64))


def test_perplexity_is_exp_entropy_of_code_usage():
    assert float(perplexity(torch.arange(8).repeat(3), 8)) == pytest.approx(8.0)
    assert float(perplexity(torch.zeros(10, dtype=torch.long), 8)) == pytest.approx(1.0)
    idx = torch.tensor([0, 0, 0, 1, 2, 2, 5])
    p = torch.bincount(idx, minlength=6).float() / len(idx)
    assert float(perplexity(idx, 6)) == pytest.approx(math.exp(float(D.Categorical(probs=p).entropy())), rel=1e-6)


def _collapsed_vqvae(data, restart_after):
    config = VQVAEConfig(num_codes=16, code_dim=4, net="mlp", hidden=(64,), prior="categorical", restart_after=restart_after)
    model = genlab.create("vq-vae", data=data, **config.to_dict())
    with torch.no_grad():  # every code at one point far from the encoder's outputs: usage collapsed to one code
        model.quantizer.codebook.copy_(50.0 + 1e-3 * torch.randn(16, 4, generator=torch.Generator().manual_seed(0)))
        model.quantizer.ema_embed_sum.copy_(model.quantizer.codebook)
        model.initialized_from_data.fill_(1)  # keep this codebook: skip the data-dependent initialisation
    return model


def test_codebook_perplexity_on_digits_rises_above_half_the_codebook():
    """From a collapsed codebook (perplexity ~1), dead-code restarts bring the validation images'
    code perplexity above K / 2 within 150 steps. The floor: perplexity <= the number of codes used,
    so above K / 2 more than half the codebook is in use; without restarts it stays near 1."""
    data = genlab.data.load("digits")
    x_val = data.split("val").tensors()[0]
    usage = {}
    for restart_after in (10, 0):
        model = _collapsed_vqvae(data, restart_after)
        start = float(perplexity(model.encode_indices(x_val), 16))
        genlab.fit(model, data, max_steps=150, batch_size=64, lr=2e-3, ema_decay=0.0, progress=False)
        usage[restart_after] = (start, float(perplexity(model.eval().encode_indices(x_val), 16)))
    assert usage[10][0] < 1.5 and usage[0][0] < 1.5, usage
    assert usage[10][1] > 16 / 2, usage
    assert usage[0][1] < 2.0, usage


def test_decode_quantizes_and_reconstruct_decodes_the_codes():
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0][:6]
    model = VQVAE(VQVAEConfig(num_codes=8, code_dim=4, net="mlp", hidden=(32,), prior="categorical"), data.spec).eval()
    z_e = model.encode(x)
    codes = model.encode_indices(x)
    torch.testing.assert_close(model.decode(z_e), model.decode_indices(codes))
    torch.testing.assert_close(model.decode(model.quantizer.lookup(codes)), model.decode_indices(codes))
    torch.testing.assert_close(model.reconstruct(x), model.decoder_mean(model.decode_indices(codes)))


def test_priors_give_code_lengths_and_draw_valid_grids():
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0][:5]
    for prior in ("categorical", "pixelcnn"):
        torch.manual_seed(0)
        model = VQVAE(VQVAEConfig(num_codes=8, code_dim=4, net="mlp", hidden=(32,), prior=prior, prior_channels=8, prior_blocks=1), data.spec).eval()
        codes = model.encode_indices(x)
        bits = model.code_length_bits(x)
        torch.testing.assert_close(bits, -model.prior_log_prob(codes) / math.log(2.0))
        if prior == "categorical":  # untrained: uniform over 8 codes, 3 bits per grid position
            torch.testing.assert_close(bits, torch.full((5,), 16 * 3.0))
        grids = model.prior_sample(4, torch.Generator().manual_seed(0))
        assert grids.shape == (4, 4, 4) and grids.dtype == torch.long and int(grids.min()) >= 0 and int(grids.max()) < 8


def test_the_cpu_prior_reaches_the_top_of_a_7x7_code_grid():
    """On 28x28 images the cpu preset codes a 7x7 grid; its prior's dilated blocks (1, 2, 1, 2) let
    a code in the last row read the first row, where two undilated blocks reach 3 rows up. Causality
    itself is the PixelCNN's (tests/test_autoregressive.py)."""
    from genlab.data import DataSpec

    spec = DataSpec("mnist-like", kind="image", shape=(1, 28, 28), value_range=(0.0, 1.0), levels=256)
    reach = {}
    for fields in ({}, {"prior_blocks": 2, "prior_dilations": (1,)}):
        torch.manual_seed(0)
        prior = genlab.create("vq-vae", data=spec, preset="cpu", **fields).prior.pixelcnn.double()
        x = torch.randn(1, prior.first.in_channels, 7, 7, dtype=torch.double, requires_grad=True)
        grad = torch.autograd.grad(prior.trunk(x, None)[0, :, 6, 3].pow(2).sum(), x)[0].abs().sum(1)[0]
        reach[tuple(prior.config.dilations)] = 6 - int(grad.sum(1).nonzero()[:, 0].min())
    assert reach == {(1, 2, 1, 2): 6, (1,): 3}


def test_bad_prior_dilations_fail_with_the_fix():
    with pytest.raises(genlab.ConfigError, match=r"prior_dilations=\(\) must be one or more integers >= 1, e.g. 1,2,4,8"):
        VQVAEConfig(prior_dilations=())
