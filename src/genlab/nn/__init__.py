"""Building blocks shared by the model families: MLP, convolutional encoder/decoder, distributions, `frozen`."""

from genlab.nn.activations import ACTIVATIONS, get_activation
from genlab.nn.attention import MultiHeadSelfAttention, SpatialSelfAttention
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
from genlab.nn.dit import DIT_PRESETS, DiT, DiTBlock, patchify, unpatchify
from genlab.nn.embeddings import ClassEmbedding, NoiseLevelEmbedding, sinusoidal_embedding
from genlab.nn.frozen import frozen
from genlab.nn.mlp import MLP
from genlab.nn.time_mlp import TimeConditionedMLP
from genlab.nn.unet import UNET_PRESETS, UNet

__all__ = [
    "ACTIVATIONS",
    "DIT_PRESETS",
    "NETS",
    "UNET_PRESETS",
    "ClassEmbedding",
    "ConvDecoder",
    "ConvEncoder",
    "DiT",
    "DiTBlock",
    "DiagonalGaussian",
    "MLP",
    "MultiHeadSelfAttention",
    "NoiseLevelEmbedding",
    "ResidualBlock",
    "SpatialSelfAttention",
    "TimeConditionedMLP",
    "UNet",
    "Upsample",
    "bernoulli_log_likelihood",
    "build_decoder",
    "build_encoder",
    "diagonal_gaussian_log_prob",
    "downsample_plan",
    "frozen",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "get_activation",
    "patchify",
    "resolution_plan",
    "resolve_net",
    "sample_standard_normal",
    "sinusoidal_embedding",
    "standard_normal_log_prob",
    "sum_except_batch",
    "unpatchify",
]
