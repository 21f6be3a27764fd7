"""Diffusion models in four separate parts (Karras et al. 2022's view): the forward process
(`schedules`), the training objective (`objectives`), the network (`genlab.nn`), and the sampler
(`samplers`); `analytic` holds exact denoisers of Gaussian-mixture data for tests and demos."""

from genlab.models.diffusion.schedules import (
    SCHEDULES,
    VESDE,
    VPSDE,
    DiscreteSchedule,
    EDMSchedule,
    NoiseSchedule,
    Posterior,
    SubVPSDE,
    Transition,
    expand_like,
    get_schedule,
)
from genlab.models.diffusion.samplers import (
    SAMPLERS,
    LikelihoodResult,
    SampleResult,
    ancestral_sample,
    annealed_langevin_sample,
    ddim_invert,
    ddim_sample,
    euler_maruyama_sample,
    get_sampler,
    heun_sample,
    ode_log_likelihood,
    ode_sample,
    predictor_corrector_sample,
)
from genlab.models.diffusion.analytic import ExactDenoiserNetwork, GaussianMixtureData

__all__ = [
    "SCHEDULES",
    "VESDE",
    "VPSDE",
    "DiscreteSchedule",
    "EDMSchedule",
    "NoiseSchedule",
    "Posterior",
    "SubVPSDE",
    "Transition",
    "expand_like",
    "get_schedule",
    "SAMPLERS",
    "LikelihoodResult",
    "SampleResult",
    "ancestral_sample",
    "annealed_langevin_sample",
    "ddim_invert",
    "ddim_sample",
    "euler_maruyama_sample",
    "get_sampler",
    "heun_sample",
    "ode_log_likelihood",
    "ode_sample",
    "predictor_corrector_sample",
    "ExactDenoiserNetwork",
    "GaussianMixtureData",
]
