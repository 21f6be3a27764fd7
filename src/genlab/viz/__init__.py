"""Pictures shared by every model family: image grids, 2-D densities, pairs plots, training curves,
sampling trajectories, latent maps, rate-distortion curves and anomaly scores.

Figures are drawn on matplotlib's Agg canvas without pyplot (headless, thread-safe, no change to
the user's pyplot state) and every file is written atomically (temporary name, then rename).
Each `plot_*` function saves a PNG and returns its path; each `*_figure` returns the figure.
"""

from genlab.viz.anomaly import extremes_figure, plot_extremes, plot_roc, plot_score_histogram, roc_figure, score_histogram_figure
from genlab.viz.curves import curves_figure, plot_training_curves, read_metrics
from genlab.viz.density import density_figure, plot_density_2d
from genlab.viz.grid import make_grid, save_image_grid, to_uint8_image
from genlab.viz.latent import latent_map_figure, plot_latent_map, plot_rate_distortion, rate_distortion_figure
from genlab.viz.pairs import pairwise_figure, plot_pairwise
from genlab.viz.samples import plot_samples
from genlab.viz.trajectory import plot_trajectory, trajectory_figure

__all__ = [
    "extremes_figure",
    "plot_extremes",
    "plot_roc",
    "plot_score_histogram",
    "roc_figure",
    "score_histogram_figure",
    "curves_figure",
    "density_figure",
    "latent_map_figure",
    "make_grid",
    "pairwise_figure",
    "plot_density_2d",
    "plot_latent_map",
    "plot_pairwise",
    "plot_rate_distortion",
    "plot_samples",
    "plot_training_curves",
    "plot_trajectory",
    "rate_distortion_figure",
    "read_metrics",
    "save_image_grid",
    "to_uint8_image",
    "trajectory_figure",
]
