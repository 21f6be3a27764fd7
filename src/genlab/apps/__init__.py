"""Uses of trained models. `sampling`: what `genlab sample` does (chosen classes, a diffusion run's
sampler, steps and guidance, pictures, tensors and CSV rows). `editing`: inpainting and SDEdit
regeneration with any diffusion model. `latent`: latent-space tools for every encoder model
(interpolation, attribute arithmetic, latent maps, rate against distortion). `features`: a dataset's
codes for other tasks (`genlab encode`)."""

from genlab.apps.editing import edit_image_file, inpaint, read_image, read_mask, regenerate, save_edit_grid, strength_to_time
from genlab.apps.features import Codes, encode, write_codes
from genlab.apps.latent import (
    LatentMap,
    RatePoint,
    attribute_shift,
    class_means,
    decode_latent,
    encode_latent,
    interpolate,
    latent_map,
    lerp,
    pca_project,
    rate_distortion,
    slerp,
    transfer_attribute,
    write_latent_tools,
)
from genlab.apps.sampling import Samples, draw_samples, resolve_classes, sample_run, sampling_options, write_samples

__all__ = [
    "Codes",
    "LatentMap",
    "RatePoint",
    "Samples",
    "attribute_shift",
    "class_means",
    "decode_latent",
    "draw_samples",
    "edit_image_file",
    "encode",
    "encode_latent",
    "inpaint",
    "interpolate",
    "latent_map",
    "lerp",
    "pca_project",
    "rate_distortion",
    "read_image",
    "read_mask",
    "regenerate",
    "resolve_classes",
    "sample_run",
    "sampling_options",
    "save_edit_grid",
    "slerp",
    "strength_to_time",
    "transfer_attribute",
    "write_codes",
    "write_latent_tools",
    "write_samples",
]
