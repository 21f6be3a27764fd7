"""CTGAN (Xu et al. 2019, "Modeling Tabular Data using Conditional GAN"): the GAN of this package
on a table's encoded rows, with the four ideas that make a GAN work on mixed types.

A row encoded by `genlab.data.TableEncoder` is continuous coordinates and one-hot groups
(categories, mixture modes of `numeric=mode`, missing-value slots), `DataSpec.table_blocks`.

- Output heads: the generator's numbers are linear; each one-hot group leaves it through the
  Gumbel-softmax with temperature tau (Jang et al. 2017), so the critic sees near-one-hot vectors
  during training; a sampled row holds a category drawn from the group's softmax.
- Conditional vector and training-by-sampling: at every step, each row of the batch picks a group
  uniformly and a category c of it with probability proportional to log(1 + count(c)); the
  condition m is the one-hot of that (group, category) over all groups. G takes z and m, the critic
  a row and m, and the real rows are drawn from the training rows that hold c, so rare categories
  are trained as often as their log-frequency says, not their frequency.
- G's loss adds the cross-entropy between the conditioned group's logits and c, so G(z, m) holds
  the category it was asked for.
- PacGAN (Lin et al. 2018): the critic scores `pac` rows at once (concatenated), which penalises
  a generator that repeats itself; the loss is WGAN-GP's (gradient penalty 10).

Sampling draws the condition from the data (a group uniformly, a category by its training
frequency), as CTGAN does, so rows follow the joint; `sample(n, cond=labels)` sets the label
column's category instead and writes it into the row (the generator was trained to hold it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.dataset import Batch, DataSpec
from genlab.data.tables import split_blocks
from genlab.errors import ConfigError
from genlab.models.base import Loss
from genlab.models.gan.model import GAN, GANConfig
from genlab.models.gan.nets import Discriminator, DiscriminatorHead, Generator
from genlab.nn.frozen import frozen
from genlab.registry import register

__all__ = ["CTGAN", "CTGANConfig"]


@dataclasses.dataclass
class CTGANConfig(GANConfig):
    """GANConfig with CTGAN's choices (Xu et al. 2019): WGAN-GP with a penalty of 10, Adam (0.5, 0.9),
    one critic step per generator step, 128-d z, two hidden layers of 256.

    pac: rows the critic scores together (PacGAN); the batch size must be a multiple of it.
    tau: temperature of the Gumbel-softmax of the one-hot groups.
    class_conditional: `sample(n, cond=labels)` conditions on the label column (the data's target);
        None: when the data has one. The generator learns every group's condition either way."""

    loss: str = "wasserstein-gp"
    gp_weight: float | None = 10.0
    latent_dim: int | None = 128
    hidden: tuple[int, ...] = (256, 256)
    betas: tuple[float, float] = (0.5, 0.9)
    discriminator_norm: str = "none"
    class_conditional: bool | None = None  # type: ignore[assignment]
    pac: int = 10
    tau: float = 0.2

    def validate(self) -> None:
        super().validate()
        self._positive("pac", "tau")


@register("ctgan", CTGANConfig, family="gan",
          summary="CTGAN (Xu et al. 2019): conditional GAN for tables, training-by-sampling, Gumbel-softmax groups, PacGAN, WGAN-GP")
class CTGAN(GAN):
    """CTGAN on a table's encoded rows (module docstring).

    >>> import torch, genlab
    >>> data = genlab.data.load("iris")
    >>> model = genlab.create("ctgan", data=data, hidden=(16,), pac=2)
    >>> model.sample(4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 7])
    """

    # the packed critic judges `pac` rows together and G draws given a sampled condition vector: neither
    # scores one row as the GAN's anomaly scores (`realness`, `invert`) need
    realness = None
    invert = None
    fit_inverse_encoder = None

    data_kinds = ("table",)
    train_defaults: dict[str, Any] = {"max_steps": 3000, "batch_size": 500, "lr": 2e-4, "ema_decay": 0.999}
    cpu_train_defaults: dict[str, Any] = {}
    vector_train_defaults: dict[str, Any] = {}

    # CTGAN trains 300 epochs of 500 rows; the steps that makes, kept within what 2 CPU cores run
    # in minutes (README, "Tables")
    EPOCHS, MIN_STEPS, MAX_STEPS = 300, 1000, 5000

    def training_defaults(self) -> dict[str, Any]:
        defaults = dict(self.train_defaults)
        if self.spec.rows is not None:
            epoch = -(-int(0.8 * self.spec.rows) // defaults["batch_size"])  # steps per pass over the training split
            defaults["max_steps"] = min(self.MAX_STEPS, max(self.MIN_STEPS, self.EPOCHS * epoch))
        return defaults

    def __init__(self, config: CTGANConfig, spec: DataSpec) -> None:
        if not spec.table_blocks:
            raise ConfigError(f"ctgan reads a table's column layout, and {spec.name!r} ({spec.kind}) has none; load a CSV table")
        # a table of numbers only (quantile-encoded) has no group: no condition, rows drawn uniformly
        _, self.groups = split_blocks(spec.table_blocks)
        self.cond_dim = sum(stop - start for _, start, stop in self.groups)
        if config.class_conditional is None:  # resolved once, so config.yaml records it
            config = dataclasses.replace(config, class_conditional=spec.num_classes is not None)
        super().__init__(config, spec)
        self.train_defaults = dict(type(self).train_defaults)  # GAN.__init__ set the vector ones
        self.label_group = next((i for i, g in enumerate(self.groups) if g[0] == spec.target), None)
        self.num_classes = spec.num_classes if config.class_conditional and self.label_group is not None else None
        offsets = [0]
        for _, start, stop in self.groups:
            offsets.append(offsets[-1] + stop - start)
        self.register_buffer("group_offsets", torch.tensor(offsets), persistent=False)  # into the condition vector
        self.register_buffer("group_columns", torch.tensor([start for _, start, _ in self.groups]), persistent=False)
        self.register_buffer("category_counts", torch.ones(self.cond_dim))  # training rows of each (group, category)
        self.register_buffer("training_rows", torch.zeros(0, spec.dim), persistent=False)
        self.register_buffer("rows_by_category", torch.zeros(0, dtype=torch.long), persistent=False)

    # -- nets: G(z, m) and the packed critic D(pack(x, m)) ------------------------------------------------
    def _build_generator(self) -> Generator:
        trunk = self.network.generator_trunk(self.latent_dim + self.cond_dim, self.spec.shape, self._trunk_options())
        return Generator(trunk, num_classes=None, embedding_dim=self.config.embedding_dim, tanh=False)

    def _build_discriminator(self) -> Discriminator:
        if self.config.minibatch_discrimination:
            raise ConfigError("ctgan packs rows (PacGAN) in place of minibatch discrimination; drop minibatch_discrimination")
        trunk = self.network.discriminator_trunk((self.config.pac * (self.spec.dim + self.cond_dim),), self._trunk_options())
        return Discriminator(trunk, DiscriminatorHead(trunk.out_features, num_classes=None))

    def initialize(self, train, generator: torch.Generator) -> None:
        """The training rows (kept on the model's device for training-by-sampling, not saved) and the
        count of rows holding each category of each group."""
        x, _ = train.tensors()
        x = x.to(self.category_counts.device)
        flat = self._categories(x)  # (N, groups) flat indices into the condition vector
        self.category_counts.copy_(torch.bincount(flat.reshape(-1), minlength=self.cond_dim).float())
        self._keep_training_rows(x, flat)

    def _keep_training_rows(self, x: Tensor, flat: Tensor) -> None:
        # rows sorted by category, per group: rows_by_category[g, starts[c]:starts[c] + counts[c]] hold category c
        self.training_rows = x.float()
        self.rows_by_category = torch.argsort(flat, dim=0, stable=True).T.contiguous()  # (groups, N); (0, N) without groups

    def _categories(self, x: Tensor) -> Tensor:
        """Each row's category in each group as an index into the condition vector: (B, D) -> (B, groups)."""
        if not self.groups:
            return torch.zeros(len(x), 0, dtype=torch.long, device=x.device)
        return torch.stack([x[:, start:stop].argmax(1) + self.group_offsets[i] for i, (_, start, stop) in enumerate(self.groups)], 1)

    # -- spaces: encoded rows are already on the scale the nets want ------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        return x

    def from_model_space(self, x: Tensor) -> Tensor:
        return x.clamp(*self.spec.value_range)

    # -- conditions -----------------------------------------------------------------------------------
    def _condition(self, n: int, weights: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(group (n,), flat category (n,)): a group uniformly, a category of it by `weights` (cond_dim,);
        both empty where the table has no group."""
        device = weights.device
        if not self.groups:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty
        group = torch.randint(len(self.groups), (n,), generator=generator, device=device)
        width = int((self.group_offsets[1:] - self.group_offsets[:-1]).max())
        slots = self.group_offsets[group].unsqueeze(1) + torch.arange(width, device=device)  # (n, width)
        inside = slots < self.group_offsets[group + 1].unsqueeze(1)
        p = torch.where(inside, weights[slots.clamp_max(self.cond_dim - 1)], torch.zeros((), device=device))
        category = torch.multinomial(p, 1, generator=generator).squeeze(1)
        return group, self.group_offsets[group] + category

    def _one_hot(self, flat: Tensor, n: int) -> Tensor:
        """The conditions (n, cond_dim): one-hot rows, or (n, 0) where the table has no group."""
        if not self.groups:
            return torch.zeros(n, 0, device=self.category_counts.device)
        return F.one_hot(flat, self.cond_dim).float()

    def _real_rows(self, group: Tensor, flat: Tensor, n: int) -> Tensor:
        """A training row holding each (group, category), uniformly among those that do (any
        training row where the table has no group)."""
        if not self.groups:
            return self.training_rows[torch.randint(len(self.training_rows), (n,), device=self.training_rows.device)]
        counts = self.category_counts.long()
        starts = torch.cumsum(counts, 0) - counts  # where each category's rows start in the group's sort, plus the group's own start
        begin = starts[flat] - starts[self.group_offsets[group]]
        pick = begin + (torch.rand(len(flat), device=flat.device) * counts[flat]).long().clamp_max(counts[flat] - 1)
        return self.training_rows[self.rows_by_category[group, pick]]

    # -- generation --------------------------------------------------------------------------------
    def _logits(self, z: Tensor, m: Tensor) -> Tensor:
        return self.generator(torch.cat([z, m.to(z.dtype)], 1))

    def _activate(self, raw: Tensor, *, hard: bool, generator: torch.Generator | None = None) -> Tensor:
        """Numbers as they are; each group a Gumbel-softmax (training) or the one-hot of a category
        drawn from its softmax (sampling)."""
        parts, last = [], 0
        for _, start, stop in self.groups:
            parts.append(raw[:, last:start])
            logits = raw[:, start:stop].float()
            if hard:
                drawn = torch.multinomial(F.softmax(logits, 1), 1, generator=generator).squeeze(1)
                parts.append(F.one_hot(drawn, stop - start).to(raw.dtype))
            else:
                parts.append(F.gumbel_softmax(logits, tau=self.config.tau, hard=False).to(raw.dtype))
            last = stop
        parts.append(raw[:, last:])
        return torch.cat(parts, 1)

    def _condition_loss(self, raw: Tensor, flat: Tensor, group: Tensor) -> Tensor:
        """Mean cross-entropy of the conditioned group's logits against its category (0 without groups)."""
        if not self.groups:
            return raw.new_zeros(())
        log_probs = torch.cat([F.log_softmax(raw[:, start:stop].float(), 1) for _, start, stop in self.groups], 1)
        return -log_probs.gather(1, flat.unsqueeze(1)).mean()

    def _packed(self, x: Tensor, m: Tensor) -> Tensor:
        rows = torch.cat([x, m.to(x.dtype)], 1)
        return rows.reshape(rows.shape[0] // self.config.pac, -1)

    # -- training ------------------------------------------------------------------------------------
    def _pac_batch(self, n: int) -> int:
        pac = self.config.pac
        if n < pac:
            raise ConfigError(f"ctgan scores {pac} rows together (pac={pac}) and the batch holds {n}; "
                              f"use --batch-size {pac} or more (a multiple of {pac}), or a smaller pac")
        return n - n % pac

    def loss(self, batch: Batch) -> Loss:
        """The critic's loss on a batch without any update (the engine's validation): real rows
        as they come, each conditioned on its own category of a group drawn uniformly."""
        real = batch.x[: self._pac_batch(len(batch.x))].float()
        n = len(real)
        group = torch.randint(max(1, len(self.groups)), (n,), device=real.device)
        flat = self._categories(real).gather(1, group.unsqueeze(1)).squeeze(1) if self.groups else group[:0]
        m = self._one_hot(flat, n)
        raw = self._logits(self.latent(n), m)
        fake = self._activate(raw, hard=False)
        real_out, fake_out = self.discriminator(self._packed(real, m)), self.discriminator(self._packed(fake, m))
        d_loss = self.adversarial_loss.discriminator_loss(real_out.float(), fake_out.float())
        terms = {"g_loss": self.adversarial_loss.generator_loss(fake_out.float()).detach(),
                 "condition": self._condition_loss(raw, flat, group).detach()}
        return Loss(d_loss, terms)

    def training_step(self, batch: Batch, ctx) -> Loss:
        """One critic step on rows drawn by training-by-sampling, then (every n_critic-th call) a
        generator step: the adversarial loss plus the condition's cross-entropy."""
        if self.training_rows.shape[0] == 0:
            raise ConfigError("ctgan draws real rows by their categories, and initialize() has not seen the training rows")
        n = self._pac_batch(len(batch.x))
        weights = torch.log1p(self.category_counts)
        terms: dict[str, Tensor] = {}
        with ctx.autocast():
            group, flat = self._condition(n, weights)
            m = self._one_hot(flat, n)
            real = self._real_rows(group, flat, n)
            with torch.no_grad():
                fake = self._activate(self._logits(self.latent(n), m), hard=False)
        d_total, real_out, fake_out = self.critic_step(ctx, self.discriminator, self._packed(real, m), self._packed(fake, m), terms)

        if (ctx.step + 1) % self.config.n_critic == 0:
            with frozen(self.discriminator):
                with ctx.autocast():
                    group, flat = self._condition(n, weights)
                    m = self._one_hot(flat, n)
                    raw = self._logits(self.latent(n), m)
                    adversarial = self.adversarial_loss.generator_loss(self.discriminator(self._packed(self._activate(raw, hard=False), m)).float())
                    condition = self._condition_loss(raw, flat, group)
                    g_loss = adversarial + condition
                ctx.backward(g_loss)
                ctx.optimizer_step("generator")
            terms["condition"] = condition.detach()
        else:
            g_loss = self.adversarial_loss.generator_loss(fake_out.detach().float())
        return self.step_result(ctx, d_total, g_loss, terms, (real_out, fake_out), (real, fake))

    # -- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n encoded rows (n, D): the condition drawn from the training frequencies (a group
        uniformly, then a category by its count), or, with `cond` (labels of the label column),
        that column's category, which the row then holds."""
        labels = self.check_labels(cond, n, self.num_classes)
        device = self.category_counts.device
        if labels is None:
            group, flat = self._condition(n, self.category_counts.float(), generator=generator)
        else:
            flat = self.group_offsets[self.label_group] + labels.to(device)
        z = self.latent(n, generator, truncation=self.config.truncation)
        x = self._activate(self._logits(z, self._one_hot(flat, n)), hard=True, generator=generator)
        if labels is not None:
            _, start, stop = self.groups[self.label_group]
            x[:, start:stop] = F.one_hot(labels.to(x.device), stop - start).to(x.dtype)
        return self.from_model_space(x.float())
