"""Building blocks shared by the model families: MLP, convolutional encoder/decoder, distributions."""

from genlab.nn.activations import ACTIVATIONS, get_activation
from genlab.nn.builders import NETS, build_decoder, build_encoder, resolve_net
from genlab.nn.conv import ConvDecoder, ConvEncoder, ResidualBlock, Upsample, downsample_plan, resolution_plan
from genlab.nn.distributions import (
    DiagonalGaussian,
    bernoulli_log_likelihood,
    diagonal_gaussian_log_prob,
    gaussian_kl,
    gaussian_log_likelihood,
    sample_standard_normal,
    standard_normal_log_prob,
    sum_except_batch,
)
from genlab.nn.mlp import MLP

__all__ = [
    "ACTIVATIONS",
    "NETS",
    "ConvDecoder",
    "ConvEncoder",
    "DiagonalGaussian",
    "MLP",
    "ResidualBlock",
    "Upsample",
    "bernoulli_log_likelihood",
    "build_decoder",
    "build_encoder",
    "diagonal_gaussian_log_prob",
    "downsample_plan",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "get_activation",
    "resolution_plan",
    "resolve_net",
    "sample_standard_normal",
    "standard_normal_log_prob",
    "sum_except_batch",
]
