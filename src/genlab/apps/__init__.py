"""Uses of trained models. `editing`: inpainting and SDEdit regeneration with any diffusion model.
`latent`: latent-space tools for every encoder model (interpolation, attribute arithmetic, latent
maps, rate against distortion)."""

from genlab.apps.editing import edit_image_file, inpaint, read_image, read_mask, regenerate, save_edit_grid, strength_to_time
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

__all__ = [
    "LatentMap",
    "RatePoint",
    "attribute_shift",
    "class_means",
    "decode_latent",
    "edit_image_file",
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
    "save_edit_grid",
    "slerp",
    "strength_to_time",
    "transfer_attribute",
    "write_latent_tools",
]
