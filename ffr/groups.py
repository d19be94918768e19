"""The group model: a group is a (class y, bias b) pair, optionally split by source (real/synthetic).

Group ids are stable and dense: ``g = y * n_bias + b``. Mixed real+synthetic training (USB/ASB) lets
group-aware methods see the source too, as ``g = (y * n_bias + b) * 2 + source`` — the (y, b, source)
groups of the FFR paper. Names travel with the spec so every table can print them.

A dataset may declare which (y, b) pairs exist at all (``populated``): SpuCo Animals has birds only on land or
water and dogs only indoors or outdoors, so 8 of its 16 pairs are groups. Ids stay dense over all pairs;
generation budgets and tables cover the populated ones only (None: every pair is a group).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffr.errors import FFRError

REAL, SYNTHETIC = 0, 1
SOURCE_NAMES = ("real", "synthetic")


@dataclass(frozen=True)
class GroupSpec:
    class_names: tuple[str, ...]
    bias_names: tuple[str, ...]
    with_source: bool = False
    populated: tuple[tuple[int, int], ...] | None = None  # the (y, b) pairs that exist; None: all of them

    def __post_init__(self) -> None:
        if not self.class_names or not self.bias_names:
            raise FFRError(f"a group spec needs class and bias names, got {self.class_names!r} × {self.bias_names!r}")
        if self.populated is not None:
            pairs = tuple(sorted({(int(y), int(b)) for y, b in self.populated}))
            bad = [p for p in pairs if not (0 <= p[0] < self.n_classes and 0 <= p[1] < self.n_bias)]
            if bad or not pairs:
                raise FFRError(f"populated groups {list(self.populated)!r} must be (class, bias) index pairs within "
                               f"{self.n_classes} × {self.n_bias}")
            object.__setattr__(self, "populated", pairs)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_bias(self) -> int:
        return len(self.bias_names)

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_bias * (2 if self.with_source else 1)

    def group_id(self, y, b, source=None):
        """Works on ints and on numpy arrays alike."""
        g = np.asarray(y) * self.n_bias + np.asarray(b)
        if self.with_source:
            if source is None:
                raise FFRError("this group spec splits groups by source; pass source (0 real, 1 synthetic)")
            g = g * 2 + np.asarray(source)
        return int(g) if np.ndim(g) == 0 else g

    def decode(self, g: int) -> tuple[int, ...]:
        """Group id → (y, b) or (y, b, source)."""
        source = None
        if self.with_source:
            g, source = divmod(int(g), 2)
        y, b = divmod(int(g), self.n_bias)
        return (y, b) if source is None else (y, b, source)

    def group_name(self, g: int) -> str:
        parts = self.decode(g)
        name = f"{self.class_names[parts[0]]}/{self.bias_names[parts[1]]}"
        return name if len(parts) == 2 else f"{name}/{SOURCE_NAMES[parts[2]]}"

    def group_names(self) -> list[str]:
        return [self.group_name(g) for g in range(self.n_groups)]

    def pairs(self) -> list[tuple[int, int]]:
        """The (y, b) pairs that are groups of this dataset, in id order (every pair unless ``populated``)."""
        if self.populated is not None:
            return list(self.populated)
        return [(y, b) for y in range(self.n_classes) for b in range(self.n_bias)]

    def is_populated(self, y: int, b: int) -> bool:
        return self.populated is None or (int(y), int(b)) in self.populated

    def pair_name(self, y: int, b: int) -> str:
        return f"{self.class_names[y]}/{self.bias_names[b]}"

    def with_sources(self) -> "GroupSpec":
        return GroupSpec(self.class_names, self.bias_names, with_source=True, populated=self.populated)

    def to_dict(self) -> dict:
        out = {"class_names": list(self.class_names), "bias_names": list(self.bias_names),
               "with_source": self.with_source}
        if self.populated is not None:  # only then, so files of fully populated datasets stay as they were
            out["populated"] = [list(p) for p in self.populated]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "GroupSpec":
        populated = d.get("populated")
        return cls(tuple(d["class_names"]), tuple(d["bias_names"]), bool(d.get("with_source", False)),
                   None if populated is None else tuple(tuple(p) for p in populated))


def group_counts(y: np.ndarray, b: np.ndarray) -> dict[tuple[int, int], int]:
    """Count examples per (y, b) pair present in the arrays."""
    pairs, counts = np.unique(np.stack([np.asarray(y), np.asarray(b)], axis=1), axis=0, return_counts=True)
    return {(int(p[0]), int(p[1])): int(c) for p, c in zip(pairs, counts)}
