"""The rank grid and the layer split: pure functions shared by the planner and the runtime.

Rank order is TP innermost, then PP, then DP:  rank = (dp * pp + stage) * tp + tp_rank.
So TP groups are adjacent ranks ((0,1), (2,3), ...) and share the fastest links.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankPlace:
    rank: int
    dp: int
    stage: int
    tp: int


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    # decoder layers per stage, sums to the model's layer count; empty when the model is unknown
    # (a benchmark imported without its model): no stage has a known layer
    layer_split: tuple[int, ...]

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    def place(self, rank: int) -> RankPlace:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside world of {self.world_size}")
        tp_rank = rank % self.tp
        stage = (rank // self.tp) % self.pp
        dp = rank // (self.tp * self.pp)
        return RankPlace(rank, dp, stage, tp_rank)

    def rank_of(self, dp: int, stage: int, tp: int) -> int:
        return (dp * self.pp + stage) * self.tp + tp

    def layers_of_stage(self, stage: int) -> range:
        if not self.layer_split:
            return range(0)
        start = sum(self.layer_split[:stage])
        return range(start, start + self.layer_split[stage])

    def tp_groups(self) -> list[list[int]]:
        return [
            [self.rank_of(d, s, t) for t in range(self.tp)]
            for d in range(self.dp)
            for s in range(self.pp)
        ]

    def pp_groups(self) -> list[list[int]]:
        return [
            [self.rank_of(d, s, t) for s in range(self.pp)]
            for d in range(self.dp)
            for t in range(self.tp)
        ]

    def dp_groups(self) -> list[list[int]]:
        return [
            [self.rank_of(d, s, t) for d in range(self.dp)]
            for s in range(self.pp)
            for t in range(self.tp)
        ]

    def is_first_stage(self, rank: int) -> bool:
        return self.place(rank).stage == 0

    def is_last_stage(self, rank: int) -> bool:
        return self.place(rank).stage == self.pp - 1


def even_split(num_layers: int, pp: int) -> tuple[int, ...]:
    """Split layers as evenly as possible; the remainder goes to the middle stages first,
    because the first stage also holds the embedding and the last the norm and lm_head.

    80 layers / 4 stages -> (20, 20, 20, 20); 10 / 4 -> (2, 3, 3, 2); 9 / 4 -> (2, 3, 2, 2).
    """
    if pp < 1 or num_layers < pp:
        raise ValueError(f"cannot split {num_layers} layers into {pp} stages")
    base, extra = divmod(num_layers, pp)
    split = [base] * pp
    order = list(range(1, pp - 1)) + [0, pp - 1] if pp > 2 else list(range(pp))
    for s in order[:extra]:
        split[s] += 1
    return tuple(split)
