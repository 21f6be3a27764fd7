"""Uses of trained models. `editing`: inpainting and SDEdit regeneration with any diffusion model."""

from genlab.apps.editing import edit_image_file, inpaint, read_image, read_mask, regenerate, save_edit_grid, strength_to_time

__all__ = ["edit_image_file", "inpaint", "read_image", "read_mask", "regenerate", "save_edit_grid", "strength_to_time"]
