"""TabDDPM-style diffusion for mixed-type tables (`tabddpm`): Gaussian diffusion on the numbers, masked diffusion on
the categories, one network for both, and exact conditioning on chosen categorical columns.

A row encoded by `genlab.data.TableEncoder` is a set of continuous coordinates x (the numbers,
Gaussianised by the quantile transform) and one-hot blocks c_1..c_K (categories, mixture modes,
missing-value slots), `DataSpec.table_blocks`. At time t in (0, 1]:

- numbers: x_t = alpha(t) x_0 + sigma(t) eps (a cosine VP schedule, `DiscreteSchedule.cosine`), the
  network predicts eps, the loss is |eps_hat - eps|^2 (Ho et al. 2020), as TabDDPM does
  (Kotelnikov et al. 2023);
- categories: each block is replaced by a [MASK] state with probability t, independently (the
  absorbing "masked diffusion" of Austin et al. 2021 with MDLM's linear schedule, Sahoo et al.
  2024; TabDiff, Shi et al. 2025, pairs it with Gaussian diffusion the same way); the network
  predicts p(c_0 | x_t, c_t) and the loss is the cross-entropy on the masked blocks.

Sampling runs t from 1 to 0 on `sampling_steps` equal steps: the numbers by the DDIM step
x_s = alpha(s) x0_hat + sigma(s) eps_hat (Song et al. 2021, eta = 0), or the ancestral step
x_s ~ q(x_s | x_t, x0_hat) (Ho et al. 2020); each block still masked at t is revealed between t
and s with probability (t - s) / t, drawn from the predicted categories, so at t = 0 every block
holds one. DDIM is the default: the ancestral step puts E[x0 | x_t] in place of x0, and so loses
some of a column's spread on a coarse grid (README, "Why these defaults").

Conditioning: the blocks of the columns in `condition_on` (by default the label column, e.g.
--data-option target=species) are never masked. They are inputs, not outputs, so
p(row | species = Gentoo) is sampled by setting them (exactly, no rejection), and an
unconditional row draws them first from their joint frequencies in the training split,
p(row) = p(condition) p(rest | condition).
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
from genlab.models.tabular.conditions import ConditionColumns
from genlab.models.diffusion.schedules import DiscreteSchedule, expand_like
from genlab.nn.distributions import sample_standard_normal
from genlab.nn.time_mlp import TimeConditionedMLP
from genlab.registry import register

__all__ = ["TabDDPM", "TabDDPMConfig"]

SAMPLERS = ("ddim", "ancestral")
SMALL_TABLE_ROWS = 10_000
SMALL_TABLE_DROPOUT = 0.1


@dataclasses.dataclass
class TabDDPMConfig(Config):
    """Configuration of the `tabddpm` model.

    hidden: widths of the denoising MLP (every layer told the time, `TimeConditionedMLP`).
    embedding_dim: width of the time embedding.
    steps: N, the grid of the cosine noise schedule (Nichol & Dhariwal 2021) of the numbers.
    sampling_steps: network evaluations per sample (steps from t = 1 to 0).
    sampler: the numbers' update: "ddim" (deterministic given the categories) or "ancestral".
    condition_on: categorical columns the model conditions on (set at sampling time, never
        generated): names separated by commas; None: the label column when the data has one
        (--data-option target=COLUMN), else none; "" conditions on nothing.
    dropout: dropout after every hidden layer; None: 0.1 on tables of fewer than SMALL_TABLE_ROWS
        rows, which a network of this size otherwise learns row by row, 0 on larger ones.
    """

    hidden: tuple[int, ...] = (512, 512, 512)
    embedding_dim: int = 128
    steps: int = 1000
    sampling_steps: int = 200
    sampler: str = "ddim"
    condition_on: tuple[str, ...] | None = None
    dropout: float | None = None

    def validate(self) -> None:
        self._positive("embedding_dim", "steps", "sampling_steps")
        if self.dropout is not None:
            self._in_range("dropout", 0.0, 0.99)
        self._choice("sampler", SAMPLERS)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"TabDDPMConfig.hidden={self.hidden!r} must be a non-empty list of positive widths, e.g. 512,512,512")


@register("tabddpm", TabDDPMConfig, family="tabular", formerly=("tabular",),
          summary="Mixed-type table diffusion (TabDDPM): Gaussian on numbers, masked on categories, exact conditioning")
class TabDDPM(ConditionColumns, GenerativeModel):
    """Gaussian + masked diffusion over a table's encoded rows (module docstring).

    >>> import genlab
    >>> data = genlab.data.load("iris")
    >>> model = genlab.create("tabddpm", data=data, hidden=(32,), sampling_steps=4)
    >>> model.condition_columns, model.sample(3).shape
    (('target',), torch.Size([3, 7]))
    """

    data_kinds = ("table",)
    train_defaults = {"max_steps": 6000, "batch_size": 1024, "lr": 2e-3, "lr_schedule": "cosine", "warmup_steps": 100,
                      "ema_decay": 0.995}
    # the default length follows the table: one step per ROWS_PER_STEP rows (at batch 1024 the
    # 80% training split is seen 160 times), between MIN_STEPS and the 6,000 that fit 10 minutes
    # of 2 CPU cores at 50,000 rows; a small table trained longer is copied, not learned (README,
    # "Tables": its rows' distances to the closest training row fall below the held-out rows')
    ROWS_PER_STEP, MIN_STEPS = 8, 1000

    def training_defaults(self) -> dict[str, Any]:
        defaults = dict(self.train_defaults)
        if self.spec.rows is not None:
            defaults["max_steps"] = int(min(defaults["max_steps"], max(self.MIN_STEPS, self.spec.rows // self.ROWS_PER_STEP)))
        return defaults

    def __init__(self, config: TabDDPMConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.setup_conditions(spec, config.condition_on)
        self.generated_blocks = [b for b in self.categorical if b[0] not in self.condition_columns]
        self.register_buffer("continuous_index", torch.tensor(self.continuous, dtype=torch.long))

        self.schedule = DiscreteSchedule.cosine(config.steps)
        # input: the numbers, and each one-hot block with one more slot for [MASK]
        in_dim = len(self.continuous) + sum(stop - start + 1 for _, start, stop in self.categorical)
        out_dim = len(self.continuous) + sum(stop - start for _, start, stop in self.generated_blocks)
        if config.dropout is None:  # resolved once, so config.yaml records it and a loaded run keeps it
            small = spec.rows is not None and spec.rows < SMALL_TABLE_ROWS
            config = dataclasses.replace(config, dropout=SMALL_TABLE_DROPOUT if small else 0.0)
            self.config = config
        self.net = TimeConditionedMLP(dim=in_dim, hidden=config.hidden, embedding_dim=config.embedding_dim, out_dim=out_dim,
                                      dropout=config.dropout)

    def initialize(self, train: Dataset, generator: torch.Generator) -> None:
        """Count the training rows of each combination of the conditioning columns' values."""
        self.count_conditions(train.tensors()[0])

    # -- the network ------------------------------------------------------------------------------
    def _network_input(self, numbers: Tensor, states: list[Tensor]) -> Tensor:
        """numbers (B, n) and each block's state (B,) in [0, width] (width = [MASK]) -> (B, in_dim)."""
        parts = [numbers]
        for (_, start, stop), state in zip(self.categorical, states):
            parts.append(F.one_hot(state, stop - start + 1).to(numbers.dtype))
        return torch.cat(parts, dim=1)

    def _predict(self, numbers: Tensor, states: list[Tensor], t: Tensor) -> tuple[Tensor, list[Tensor]]:
        """eps_hat (B, n) for the numbers and logits (B, width) for each generated block."""
        h = self.net(self._network_input(numbers, states), self.schedule.noise_conditioning(t))
        eps, offset, logits = h[:, : len(self.continuous)], len(self.continuous), []
        for _, start, stop in self.generated_blocks:
            logits.append(h[:, offset : offset + stop - start])
            offset += stop - start
        return eps, logits

    def _split(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoded rows (B, D) -> the numbers (B, n) and each block's category index (B,)."""
        return x[:, self.continuous_index], [x[:, start:stop].argmax(1) for _, start, stop in self.categorical]

    # -- training ------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> Loss:
        """|eps_hat - eps|^2 averaged over the numbers + the mean cross-entropy of the masked
        blocks (averaged over the masked blocks of each row), at t ~ U(1/N, 1)."""
        x = batch.x
        numbers, states = self._split(x)
        b = len(x)
        t = torch.rand(b, device=x.device) * (1.0 - 1.0 / self.config.steps) + 1.0 / self.config.steps
        eps = torch.randn_like(numbers)
        noisy = self.schedule.q_sample(numbers, t, eps) if numbers.shape[1] else numbers
        masked, noisy_states = [], []
        generated = {id(blk) for blk in self.generated_blocks}
        for blk, state in zip(self.categorical, states):
            m = (torch.rand(b, device=x.device) < t) if id(blk) in generated else torch.zeros(b, dtype=torch.bool, device=x.device)
            masked.append(m)
            noisy_states.append(torch.where(m, torch.full_like(state, blk[2] - blk[1]), state))
        eps_hat, logits = self._predict(noisy, noisy_states, t)
        terms: dict[str, Tensor] = {}
        total = x.new_zeros(())
        if numbers.shape[1]:
            terms["numbers"] = F.mse_loss(eps_hat.float(), eps.float())
            total = total + terms["numbers"]
        if self.generated_blocks:
            gen_masks = [m for blk, m in zip(self.categorical, masked) if id(blk) in generated]
            gen_states = [s for blk, s in zip(self.categorical, states) if id(blk) in generated]
            ce = torch.stack([F.cross_entropy(lg.float(), s, reduction="none") * m for lg, s, m in zip(logits, gen_states, gen_masks)], 1)
            count = torch.stack(gen_masks, 1).sum(1)
            terms["categories"] = (ce.sum(1) / count.clamp_min(1)).sum() / count.gt(0).sum().clamp_min(1)
            total = total + terms["categories"]
        return Loss(total, terms)

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_where(self, n: int, where: Mapping[str, Tensor | int], generator: torch.Generator | None = None) -> Tensor:
        """n encoded rows (n, D) from p(row | column = value for each entry of `where`), a value
        being the category index (an int for all rows, or (n,)) of a conditioning column; the
        conditioning columns not in `where` are drawn from their training frequencies given those
        that are (an impossible combination raises ConfigError)."""
        device = self.device
        states = self.draw_conditions(n, where, generator, device)
        numbers = sample_standard_normal((n, len(self.continuous)), generator=generator, device=device, dtype=torch.float32)
        block_states: list[Tensor] = []
        conditioned = dict(zip([id(b) for b in self.condition_blocks], states))
        for blk in self.categorical:
            block_states.append(conditioned.get(id(blk), torch.full((n,), blk[2] - blk[1], dtype=torch.long, device=device)))
        times = torch.linspace(1.0, 0.0, self.config.sampling_steps + 1, device=device)
        generated = [i for i, blk in enumerate(self.categorical) if id(blk) not in conditioned]
        for t_now, t_next in zip(times[:-1], times[1:]):
            t = t_now.expand(n)
            eps_hat, logits = self._predict(numbers, block_states, t)
            if len(self.continuous):
                # clipped to the codes' range, as DDPM clips x0_hat to [-1, 1]: at t near 1 alpha(t)
                # is near 0 and eps_hat's error is divided by it
                x0 = self.schedule.x0_from_eps(numbers, t, eps_hat.float()).clamp(*self.spec.value_range)
                s = t_next.expand(n)
                if t_next == 0:
                    numbers = x0
                elif self.config.sampler == "ddim":
                    eps = self.schedule.eps_from_x0(numbers, t, x0)  # consistent with the clipped x0
                    numbers = self.schedule.q_sample(x0, s, eps)
                else:
                    post = self.schedule.posterior(numbers, x0, t, s)
                    noise = sample_standard_normal(numbers.shape, generator=generator, device=device, dtype=numbers.dtype)
                    numbers = post.mean + expand_like(post.variance.sqrt().to(numbers.dtype), numbers) * noise
            reveal_p = float((t_now - t_next) / t_now)
            for i, lg in zip(generated, logits):
                width = self.categorical[i][2] - self.categorical[i][1]
                still = block_states[i] == width
                reveal = still & (torch.rand(n, generator=generator, device=device) < reveal_p)
                if reveal.any():
                    drawn = torch.multinomial(F.softmax(lg.float(), dim=1), 1, generator=generator).squeeze(1)
                    block_states[i] = torch.where(reveal, drawn, block_states[i])
        return self._assemble(numbers, block_states)

    def _assemble(self, numbers: Tensor, states: list[Tensor]) -> Tensor:
        """Numbers (n, c) and block states (n,) -> encoded rows (n, D)."""
        out = torch.zeros(len(numbers), self.spec.dim, device=numbers.device)
        if len(self.continuous):
            out[:, self.continuous_index] = numbers.float()
        for (_, start, stop), state in zip(self.categorical, states):
            out[:, start:stop] = F.one_hot(state.clamp_max(stop - start - 1), stop - start).float()
        return out

    def likelihood_kind(self) -> str:
        return "none"
