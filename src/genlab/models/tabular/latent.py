"""Latent diffusion for tables (`tabular`; TabSyn, Zhang et al. 2024): a table VAE first, then a
diffusion model in its latent space, conditioned exactly on chosen categorical columns.

Stage 1, the autoencoder: a genlab `vae` on the encoded rows with TVAE's decoder
(`nn.distributions.TableLikelihood`: a Gaussian per number, a categorical per one-hot block), a
N(0, I) prior and a weak KL weight beta, so the latents keep nearly everything a row holds:

    max  E_q(z|x)[log p(x | z)] - beta KL(q(z|x) || N(0, I)).

Stage 2, the diffusion: with the frozen encoder's posterior means z = mu(x), standardised per
dimension over the training split (z_norm = (z - m) / s), a `ddpm` diffusion model over the vectors
z_norm learns p(z_norm | c), c the cell (combination of values) of the conditioning columns
(`ConditionColumns`; by default the label column). Sampling draws c (given, or from its training
frequencies given the columns that are), z_norm ~ p(z_norm | c) with the diffusion's sampler, and
the row from the decoder at z = s z_norm + m: x ~ p(x | z) (decoding "sample"), or the numbers'
means and each block's most probable category (decoding "mean", TabSyn's way); the conditioning
columns are set to c exactly.

Both stages run in one `genlab.fit`: it trains the autoencoder first (`pretraining`), once, at the
start of a fresh run (remembered by `initializes_once`, so a resumed run keeps it); the run's own
steps, optimizer, learning-rate schedule and EMA then train the diffusion alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec, Dataset
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, Loss
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel
from genlab.models.diffusion.samplers import SAMPLERS
from genlab.models.latent.vae import VAE, VAEConfig
from genlab.models.tabular.conditions import ConditionColumns
from genlab.registry import register

__all__ = ["TabularLatentConfig", "TabularLatentDiffusion"]

MAX_LATENT_CONDITION_CELLS = 10_000  # the diffusion network embeds each cell: one row of a table per cell
ENCODE_CHUNK = 4096
DECODINGS = ("sample", "mean")


@dataclasses.dataclass
class TabularLatentConfig(Config):
    """Configuration of the table latent diffusion model.

    latent_dim: size of the VAE's latent z (the diffusion's vectors).
    beta: the KL weight of the VAE's objective (small: the latents stay informative).
    autoencoder_hidden: widths of the VAE's encoder and decoder MLPs.
    autoencoder_steps, autoencoder_batch_size, autoencoder_lr: the VAE's training (stage 1); None:
        as many steps as the run's max_steps, the default batch of the table's size
        (`training_defaults`).
    hidden, embedding_dim: the denoising MLP's widths and its noise-level embedding size.
    schedule, steps: the diffusion's forward process (`ddpm`'s words).
    sampler, sample_steps: the sampler ("auto": SDE-DPM-Solver++, 50 evaluations) and its steps.
    condition_on: categorical columns the model conditions on (set at sampling time, never
        generated): names separated by commas; None: the label column when the data has one, else
        none; "" conditions on nothing.
    label_dropout, guidance_scale: classifier-free guidance over the conditioning cells (as `ddpm`).
    decoding: how a latent becomes a row: "sample" draws x ~ p(x | z) (each category from the
        decoder's softmax, each number from its Gaussian), the model's own distribution;
        "mean" takes the numbers' means and each block's most probable category (TabSyn's way).
    """

    latent_dim: int = 16
    beta: float = 0.05
    autoencoder_hidden: tuple[int, ...] = (256, 256)
    autoencoder_steps: int | None = None
    autoencoder_batch_size: int | None = None
    autoencoder_lr: float = 2e-3
    hidden: tuple[int, ...] = (256, 256, 256)
    embedding_dim: int = 128
    schedule: str = "linear"
    steps: int = 1000
    sampler: str = "auto"
    sample_steps: int | None = None
    condition_on: tuple[str, ...] | None = None
    label_dropout: float = 0.1
    guidance_scale: float = 0.0
    decoding: str = "sample"

    def validate(self) -> None:
        self._positive("latent_dim", "embedding_dim", "steps", "autoencoder_lr")
        self._positive("beta", allow_zero=True)
        self._in_range("label_dropout", 0.0, 1.0)
        self._positive("guidance_scale", allow_zero=True)
        self._choice("sampler", ("auto", *SAMPLERS))
        self._choice("decoding", DECODINGS)
        for name in ("autoencoder_steps", "autoencoder_batch_size", "sample_steps"):
            if getattr(self, name) is not None:
                self._positive(name)
        for name in ("hidden", "autoencoder_hidden"):
            widths = tuple(getattr(self, name))
            if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
                raise ConfigError(f"TabularLatentConfig.{name}={widths!r} must be a non-empty list of positive widths, e.g. 256,256")
            setattr(self, name, widths)

    def autoencoder_config(self) -> VAEConfig:
        return VAEConfig(latent_dim=self.latent_dim, beta=self.beta, hidden=self.autoencoder_hidden, likelihood="table",
                         prior="standard", net="mlp")

    def diffusion_config(self, conditional: bool) -> DiffusionConfig:
        return DiffusionConfig(schedule=self.schedule, steps=self.steps, hidden=self.hidden, embedding_dim=self.embedding_dim,
                               net="mlp", sampler=self.sampler, sample_steps=self.sample_steps, class_conditional=conditional,
                               label_dropout=self.label_dropout if conditional else 0.0,
                               guidance_scale=self.guidance_scale if conditional else 0.0)


@register("tabular", TabularLatentConfig, family="tabular",
          summary="Latent diffusion for tables (TabSyn): a table VAE, then diffusion in its latents, exact conditioning")
class TabularLatentDiffusion(ConditionColumns, GenerativeModel):
    """A table VAE (stage 1) and a diffusion model over its standardised latents (stage 2), module
    docstring. loss (stage 2): the diffusion's denoising loss on z_norm = (mu(x) - m) / s with the
    rows' conditioning cells as labels, x (B, D). sample: encoded rows (n, D), one-hot blocks.

    >>> import genlab
    >>> data = genlab.data.load("iris")
    >>> model = genlab.create("tabular", data=data, latent_dim=4, hidden=(16,), autoencoder_hidden=(16,), sample_steps=4)
    >>> model.condition_columns, model.sample(3).shape
    (('target',), torch.Size([3, 7]))
    """

    data_kinds = ("table",)
    initializes_once = True
    train_defaults = {"max_steps": 3000, "batch_size": 128, "lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 100,
                      "ema_decay": 0.999}
    # a table of LARGE_TABLE_ROWS rows or more: batches of LARGE_BATCH in both stages, and one step
    # per ROWS_PER_STEP rows within [3,000, MAX_STEPS], what fits 10 minutes of 2 CPU cores at
    # 50,000 rows (README, "Tables": the figures behind these defaults)
    LARGE_TABLE_ROWS, LARGE_BATCH, ROWS_PER_STEP, MAX_STEPS = 10_000, 1024, 5, 8000

    def training_defaults(self) -> dict[str, Any]:
        defaults = dict(self.train_defaults)
        rows = self.spec.rows
        if rows is not None and rows >= self.LARGE_TABLE_ROWS:
            steps = min(self.MAX_STEPS, max(defaults["max_steps"], rows // self.ROWS_PER_STEP))
            defaults.update(max_steps=steps, batch_size=self.LARGE_BATCH)
        return defaults

    def __init__(self, config: TabularLatentConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.setup_conditions(spec, config.condition_on, max_cells=MAX_LATENT_CONDITION_CELLS)
        cells = self.condition_cell_count if self.condition_blocks else None
        self.autoencoder = VAE(config.autoencoder_config(), spec)
        latent_spec = DataSpec(f"{spec.name}-latent", kind="vector", shape=(config.latent_dim,),
                               value_range=(-float("inf"), float("inf")), num_classes=cells)
        self.diffusion = DiffusionModel(config.diffusion_config(cells is not None), latent_spec)

    # -- the two stages ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """z = mu(x), the VAE's posterior means: (B, D) -> (B, latent_dim). The diffusion standardises
        them itself (`DiffusionModel.normalize`: z_norm = (z - m) / s)."""
        return self.autoencoder.encode(x).mean.float()

    @torch.no_grad()
    def decode(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The rows of latents z, (B, latent_dim) -> (B, D), one-hot blocks: x ~ p(x | z) (decoding
        "sample") or the numbers' means and each block's most probable category ("mean"); numbers
        clamped to the code range."""
        if self.config.decoding == "sample":
            return self.autoencoder.sample_given(z, generator)
        rows = self.autoencoder.decoder_mean(self.autoencoder.decode(z))
        for _, start, stop in self.categorical:
            rows[:, start:stop] = F.one_hot(rows[:, start:stop].argmax(1), stop - start).to(rows.dtype)
        return rows

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The stage-1 VAE's reconstruction of rows x (B, D): its decoder's mean at the posterior mean
        (`VAE.reconstruct`), what the anomaly detector's reconstruction score reads."""
        return self.autoencoder.reconstruct(x)

    def pretraining(self, train: Dataset, run_steps: int) -> list[tuple[GenerativeModel, dict[str, Any]]]:
        """Stage 1: the VAE on the training rows, for autoencoder_steps or as many steps as the run
        (once: a resumed run or a second fit keeps it)."""
        if bool(self.initialized_from_data):
            return []
        self.autoencoder.requires_grad_(True)
        steps = self.config.autoencoder_steps or run_steps
        batch = self.config.autoencoder_batch_size or self.training_defaults()["batch_size"]
        return [(self.autoencoder, {"max_steps": steps, "batch_size": min(batch, len(train)),
                                    "lr": self.config.autoencoder_lr, "lr_schedule": "cosine", "warmup_steps": 0, "ema_decay": 0.0})]

    def initialize(self, train: Dataset, generator: torch.Generator) -> None:
        """After stage 1: freeze the VAE, take the per-dimension mean and std of its latents over the
        training rows (m, s), and count the conditioning cells."""
        self.autoencoder.requires_grad_(False).eval()
        x = train.tensors()[0]
        z = torch.cat([self.encode(x[i : i + ENCODE_CHUNK]) for i in range(0, len(x), ENCODE_CHUNK)])
        self.diffusion.fit_standardization(z)
        self.count_conditions(x)

    def train(self, mode: bool = True) -> "TabularLatentDiffusion":
        super().train(mode)
        self.autoencoder.eval()  # frozen after stage 1
        return self

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """AdamW over the denoiser (the autoencoder is frozen)."""
        return {"model": torch.optim.AdamW(self.diffusion.parameters(), lr=lr, weight_decay=weight_decay)}

    def loss(self, batch: Batch) -> Loss:
        """The diffusion's weighted denoising loss on the latents of the batch's rows (which it
        standardises), their conditioning cells as labels."""
        cells = self.condition_cells(batch.x) if self.condition_blocks else None
        return self.diffusion.loss(Batch(self.encode(batch.x), cells))

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_where(self, n: int, where: Mapping[str, Tensor | int], generator: torch.Generator | None = None) -> Tensor:
        """n encoded rows (n, D) from p(row | column = value for each entry of `where`), a value
        being the category index (an int for all rows, or (n,)) of a conditioning column; the
        other conditioning columns are drawn from their training frequencies given those."""
        states = self.draw_conditions(n, where, generator, self.device)
        cells = self.values_cell(states, n, self.device) if states else None
        z_norm = self.diffusion.generate(n, cells, generator).x
        rows = self.decode(self.diffusion.denormalize(z_norm.float()), generator)
        for (_, start, stop), state in zip(self.condition_blocks, states):
            rows[:, start:stop] = F.one_hot(state, stop - start).to(rows.dtype)
        return rows

    def likelihood_kind(self) -> str:
        return "none"
