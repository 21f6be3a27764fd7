"""`frozen(module)`: a player's parameters held fixed while another player steps.

In adversarial training (a GAN's generator step, an AAE's or WAE-GAN's encoder step) the loss
backpropagates through the discriminator to reach the other player's parameters; freezing D stops
its parameters from accumulating gradients its own optimizer would later apply.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block every parameter of `module` has requires_grad=False; on leaving it, also
    by an exception, each parameter gets back its own earlier flag (so a parameter frozen before
    stays frozen, and nested blocks unwind in order). Yields the module.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> with frozen(net):
    ...     net.weight.requires_grad
    False
    >>> net.weight.requires_grad
    True
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
