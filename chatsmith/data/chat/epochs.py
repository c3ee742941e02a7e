"""Which data rows a rank takes at a step: one shuffled pass per epoch, shared by every rank.

All ranks draw from one sequence: the k-th row of the run (counted over steps, then ranks, then
positions in a batch) is row `order(epoch)[i]` with `(epoch, i) = divmod(k, n)`, and each epoch's
order is a fresh shuffle from the seed. So rank r of W at step s takes the B rows
`s*B*W + r*B ...`: together the ranks cover each epoch's rows once, whatever W is, and the
position is a function of the step alone, which is all a checkpoint needs to resume exactly.
"""

from __future__ import annotations

import random


class EpochOrder:
    """Row indices of a data set of n rows for (step, rank): see the module's docstring."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cached: tuple[int, list[int]] = (-1, [])  # one epoch's order, not all of them

    def order(self, epoch: int) -> list[int]:
        if self._cached[0] != epoch:
            order = list(range(self.n))
            random.Random(self.seed * 1000003 + epoch).shuffle(order)
            self._cached = (epoch, order)
        return self._cached[1]

    def take(self, step: int, batch: int, rank: int = 0, world: int = 1) -> list[int]:
        """The `batch` row indices rank `rank` of `world` reads at `step`."""
        start = step * batch * world + rank * batch
        out = []
        for k in range(start, start + batch):
            epoch, i = divmod(k, self.n)
            out.append(self.order(epoch)[i])
        return out
