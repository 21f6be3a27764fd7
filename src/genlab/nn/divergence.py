"""The divergence of a vector field, div f(x) = tr(df/dx), exactly or by Hutchinson's estimator.

Continuous normalizing flows (Chen et al. 2018; Grathwohl et al. 2019, "FFJORD") and the
probability-flow ODE of diffusion models (Song et al. 2021) change log-densities at the rate
d log p(x(t)) / dt = -div f(x(t), t), so their likelihoods integrate this quantity along a path.

For f_x = f(x) of shape (B, ...) computed from x (B, ...) with autograd, each sample's field
depending on that sample alone (no batch statistics), and J = df/dx of one sample flattened to (D, D):

- exact:       tr(J) = sum_i dJ_ii, the diagonal read off D vector-Jacobian products e_i^T J, one
               autograd pass per dimension (for small D, e.g. 2D toys);
- hutchinson:  tr(J) = E_v[v^T J v] for any v with E[v v^T] = I (Hutchinson 1990), e.g. Rademacher
               (+-1 entries, the least variance) or standard normal: one vector-Jacobian product
               v^T J per probe v. A CNF keeps the same v for a whole ODE solve (FFJORD, sec. 3.1),
               so the solver integrates a smooth function of t.

The squared Frobenius norm ||J||_F^2 that Finlay et al. (2020, "How to train your neural ODE")
penalise comes at no extra cost from the same products: sum_i ||e_i^T J||^2 exactly, or
E_v ||v^T J||^2 by the same estimator (`divergence_and_frobenius`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.errors import ConfigError

DIVERGENCE_METHODS = ("exact", "hutchinson")
PROBE_KINDS = ("rademacher", "gaussian")


def sample_probe(
    shape: tuple[int, ...] | torch.Size,
    *,
    kind: str = "rademacher",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Hutchinson probe vectors v with E[v v^T] = I, of the given shape (e.g. (B, ...) or (P, B, ...)):
    "rademacher" draws each entry from {-1, +1} with probability 1/2, "gaussian" from N(0, 1).
    Drawn on the generator's device, then moved to `device`."""
    if kind not in PROBE_KINDS:
        raise ConfigError(f"probe kind={kind!r} is unknown; choose one of {', '.join(map(repr, PROBE_KINDS))}")
    where = generator.device if generator is not None else device
    if kind == "gaussian":
        return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)
    signs = torch.randint(0, 2, tuple(shape), generator=generator, device=where)
    return (2 * signs - 1).to(device=device, dtype=dtype)


def divergence(
    f_x: Tensor,
    x: Tensor,
    *,
    method: str,
    noise: Tensor | None = None,
    create_graph: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """div f(x) = tr(df/dx) per sample, (B,), of f_x = f(x) (B, ...) computed from x (B, ...).

    method="exact": one autograd pass per dimension D of a sample (D passes in all).
    method="hutchinson": v^T (df/dx) v, with `noise` the probe v, (B, ...) like x, or (P, B, ...) for
        the mean over P probes; without `noise`, one Rademacher probe is drawn from `generator`
        (fine for a single evaluation; inside an ODE solve pass the same noise at every step).
    create_graph: keep the graph of the result, to differentiate it (training); False returns a
        value detached from the parameters' graph in effect (evaluation).

    Each sample's f must depend on that sample only (the exact method sums over the batch), and x
    must be in f_x's graph: a view of x taken under torch.no_grad() is not (autograd then raises).
    The graph of f_x is retained, so the caller may still differentiate f_x itself.

    >>> x = torch.randn(3, 2, requires_grad=True)
    >>> A = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    >>> divergence(x @ A.T, x, method="exact", create_graph=False)
    tensor([-3., -3., -3.])
    """
    div, _ = _divergence_and_rows(f_x, x, method=method, noise=noise, create_graph=create_graph, generator=generator)
    return div


def divergence_and_frobenius(
    f_x: Tensor,
    x: Tensor,
    *,
    method: str,
    noise: Tensor | None = None,
    create_graph: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(div f(x), ||df/dx||_F^2), each (B,), from the same vector-Jacobian products as `divergence`
    (arguments as there): the squared Frobenius norm is exact with method="exact" and the unbiased
    estimate ||v^T J||^2 (averaged over the probes) with method="hutchinson" (Finlay et al. 2020)."""
    return _divergence_and_rows(f_x, x, method=method, noise=noise, create_graph=create_graph, generator=generator)


def _divergence_and_rows(
    f_x: Tensor, x: Tensor, *, method: str, noise: Tensor | None, create_graph: bool, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    if method not in DIVERGENCE_METHODS:
        raise ConfigError(f"divergence method={method!r} is unknown; choose 'exact' (small D) or 'hutchinson' (any D)")
    if f_x.shape != x.shape:
        raise ValueError(f"the field f(x) {tuple(f_x.shape)} and x {tuple(x.shape)} must have the same shape")
    if not x.requires_grad or f_x.grad_fn is None:
        raise ValueError(
            "divergence needs f(x) computed from x with autograd: call x.requires_grad_(True) and evaluate f "
            "under torch.enable_grad()"
        )
    batch = x.shape[0]
    flat_f = f_x.reshape(batch, -1)  # (B, ...) -> (B, D)
    dim = flat_f.shape[1]
    if method == "exact":
        div = x.new_zeros(batch)
        frobenius = x.new_zeros(batch)
        for i in range(dim):
            # row i of every sample's Jacobian at once: the samples do not interact
            (row,) = torch.autograd.grad(flat_f[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
            row = row.reshape(batch, -1)  # (B, ...) -> (B, D)
            div = div + row[:, i]
            frobenius = frobenius + row.pow(2).sum(1)
        return div, frobenius
    if noise is None:
        noise = sample_probe(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    probes = noise if noise.dim() == x.dim() + 1 else noise.unsqueeze(0)  # (P, B, ...)
    if probes.shape[1:] != x.shape:
        raise ValueError(f"Hutchinson noise {tuple(noise.shape)} must have x's shape {tuple(x.shape)} or (P, *x.shape)")
    div = x.new_zeros(batch)
    frobenius = x.new_zeros(batch)
    for v in probes:
        # v^T J: one vector-Jacobian product per probe
        (vjp,) = torch.autograd.grad(f_x, x, v, create_graph=create_graph, retain_graph=True)
        div = div + (vjp * v).reshape(batch, -1).sum(1)
        frobenius = frobenius + vjp.reshape(batch, -1).pow(2).sum(1)
    return div / len(probes), frobenius / len(probes)
