"""The categorical columns a table model conditions on: which ones, the joint frequencies of their
values in the training split, and drawing them for p(row | some of them).

A model that conditions on columns c_1..c_m (`condition_on`; by default the label column) samples
p(row | c = v) by setting c exactly (never by rejection); the columns of c not given are drawn
from their training frequencies given those that are, p(c_free | c_given), so an unconditional row
is p(row) = p(c) p(rest | c). A combination of values is a "cell", its flat index
cell = (((v_1) w_2 + v_2) w_3 + v_3) ..., w_k the number of categories of c_k.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from genlab.data.dataset import DataSpec
from genlab.data.tables import split_blocks
from genlab.errors import ConfigError

__all__ = ["ConditionColumns", "MAX_CONDITION_CELLS"]

MAX_CONDITION_CELLS = 1_000_000  # joint frequency table of the conditioning columns, dense

Block = tuple  # (column, start, stop) of a one-hot block in the encoded row


class ConditionColumns:
    """Mixin for a table model (an nn.Module with `spec`) that conditions on categorical columns.

    `setup_conditions` sets continuous and categorical (`data.tables.split_blocks`), condition_columns,
    condition_blocks, the buffer condition_frequencies (cells,), label_block (the label column's
    block among them, or None) and num_classes.
    """

    condition_columns: tuple[str, ...]
    condition_blocks: list[Block]
    label_block: Block | None

    def setup_conditions(self, spec: DataSpec, condition_on: Sequence[str] | None, max_cells: int = MAX_CONDITION_CELLS) -> None:
        """Read the table's layout (continuous: the numbers' coordinates, categorical: the one-hot
        blocks) and the conditioning columns. condition_on: column names; None: the label column when
        the data has one, else none."""
        if spec.table_blocks is None:
            raise ConfigError(f"the {self.name} model needs a table's column layout, and {spec.name!r} ({spec.kind}) has none; "
                              "load a CSV or table dataset (a run saved before tables had a layout: retrain it)")
        self.continuous, self.categorical = split_blocks([tuple(b) for b in spec.table_blocks])
        categorical = self.categorical
        names = spec.table_columns
        wanted = ((spec.target,) if spec.target is not None else ()) if condition_on is None else tuple(c for c in condition_on if c)
        for column in wanted:
            if column not in names:
                raise ConfigError(f"condition_on names {column!r}, not a column of {spec.name!r}; columns: {', '.join(names)}")
            if not [b for b in categorical if b[0] == column] or [b for b in spec.table_blocks if b[0] == column and b[1] == "continuous"]:
                raise ConfigError(f"condition_on: column {column!r} is numeric; the model conditions on categorical columns only")
        self.condition_columns = tuple(wanted)
        self.condition_blocks = [b for b in categorical if b[0] in wanted]
        cells = self.condition_cell_count
        if cells > max_cells:
            raise ConfigError(f"condition_on {', '.join(wanted)}: {cells:,} combinations of their values (at most {max_cells:,}); "
                              "condition on fewer columns (--set condition_on=COLUMN,..., or --set condition_on= for none)")
        self.register_buffer("condition_frequencies", torch.ones(cells) / cells)
        # a label column among the conditions: sample(n, cond=labels) fixes it (genlab sample --class)
        self.label_block = next((b for b in self.condition_blocks if b[0] == spec.target), None)
        self.num_classes = spec.num_classes if self.label_block is not None else None

    @property
    def condition_cell_count(self) -> int:
        return math.prod(stop - start for _, start, stop in self.condition_blocks)

    def condition_cells(self, x: Tensor) -> Tensor:
        """The flat index of each row's combination of conditioning values: encoded rows (B, D) -> (B,)."""
        return self.values_cell([x[:, start:stop].argmax(1) for _, start, stop in self.condition_blocks], len(x), x.device)

    def values_cell(self, values: Sequence[Tensor], n: int, device: torch.device) -> Tensor:
        """One (n,) category index per conditioning block -> the cells' flat indices (n,)."""
        cell = torch.zeros(n, dtype=torch.long, device=device)
        for (_, start, stop), value in zip(self.condition_blocks, values):
            cell = cell * (stop - start) + value
        return cell

    def cell_values(self, cell: Tensor) -> list[Tensor]:
        """The inverse of `values_cell`: (B,) -> one (B,) category index per conditioning block."""
        values = []
        for _, start, stop in reversed(self.condition_blocks):
            values.append(cell % (stop - start))
            cell = cell // (stop - start)
        return values[::-1]

    def count_conditions(self, x: Tensor) -> None:
        """condition_frequencies = the share of the training rows x (N, D) in each cell."""
        if self.condition_blocks:
            counts = torch.bincount(self.condition_cells(x), minlength=self.condition_frequencies.numel())
            self.condition_frequencies.copy_(counts.double() / counts.sum())

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n encoded rows (n, D) by the model's `sample_where`. cond: labels of the label column (when
        the model conditions on it), the other conditioning columns drawn from their joint
        frequencies given it."""
        return self.sample_where(n, self.label_conditions(cond, n), generator=generator)

    def label_conditions(self, cond: Tensor | None, n: int) -> dict[str, Tensor]:
        """sample(n, cond=labels)'s labels as `where` of the label column ({} for cond None)."""
        cond = self.check_labels(cond, n, self.num_classes)
        return {} if cond is None else {self.label_block[0]: cond}

    def draw_conditions(self, n: int, where: Mapping[str, Tensor | int], generator: torch.Generator | None,
                        device: torch.device) -> list[Tensor]:
        """Each conditioning block's category index (n,): the ones in `where` (a category index for
        all rows, or (n,)), the others drawn from the training frequencies of the cells that agree
        with them. Raises ConfigError for a column the model does not condition on, a value out of
        range, or a combination no training row has."""
        unknown = [c for c in where if c not in self.condition_columns]
        if unknown:
            hint = (f"it conditions on {', '.join(self.condition_columns)}" if self.condition_columns else "it conditions on no column")
            raise ConfigError(f"the model cannot condition on {', '.join(unknown)}: {hint}; "
                              f"retrain with --set condition_on={','.join([*self.condition_columns, *unknown])}")
        if not self.condition_blocks:
            return []
        widths = [stop - start for _, start, stop in self.condition_blocks]
        frequencies = self.condition_frequencies.reshape(widths).to(device)
        given = []
        for (name, _, _), width in zip(self.condition_blocks, widths):
            if name in where:
                value = where[name]
                if not torch.is_tensor(value) or value.numel() == 1:
                    v = torch.as_tensor(value, device=device).long().reshape(-1).expand(n)
                else:
                    v = value.to(device).long()
                if v.shape != (n,) or v.min() < 0 or v.max() >= width:
                    raise ConfigError(f"condition {name!r} needs {n} category indices in [0, {width - 1}] (or one for all rows)")
                given.append(v)
            else:
                given.append(None)
        # p(cells | given): the frequencies with the given coordinates fixed, per row
        weights = frequencies.reshape(1, -1).expand(n, -1).clone()
        grid = torch.stack(self.cell_values(torch.arange(weights.shape[1], device=device)), 0)  # (blocks, cells)
        for k, v in enumerate(given):
            if v is not None:
                weights = weights * (grid[k].unsqueeze(0) == v.unsqueeze(1))
        empty = weights.sum(1) == 0
        if empty.any():
            shown = {name: int(v[empty.nonzero()[0, 0]]) for (name, _, _), v in zip(self.condition_blocks, given) if v is not None}
            raise ConfigError(f"no training row has {shown} (category indices); choose values that occur together")
        cells = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        return self.cell_values(cells)
