"""Normalizing flows: exact log-likelihood by the change of variables
log p(x) = log p_Z(f(x)) + log|det df/dx| (Dinh et al. 2015, 2017; Kingma & Dhariwal 2018;
Papamakarios et al. 2021).

`base` holds the contract (Bijection, Compose, Inverse, FlowModel), `layers` the building blocks
(ActNorm, permutations, the LU 1x1 convolution, coupling layers, squeeze, multi-scale, variational
dequantization), and each model module registers its models on import.
"""

from genlab.models.flows.base import Bijection, Compose, FlowConfig, FlowModel, Inverse

__all__ = ["Bijection", "Compose", "FlowConfig", "FlowModel", "Inverse"]

from genlab.models.flows import layers  # noqa: F401
from genlab.models.flows import vector as _vector  # noqa: F401  (registers maf, iaf, nsf)
from genlab.models.flows import image  # noqa: F401  (registers realnvp, glow)
from genlab.models.flows import ffjord as _ffjord  # noqa: F401  (registers ffjord)
