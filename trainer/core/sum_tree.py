"""A sum tree over a fixed number of leaves: O(log n) updates and prefix-sum search, vectorised
over a batch of queries with numpy (one pass per tree level)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class SumTree:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.leaf_start = 1
        while self.leaf_start < capacity:
            self.leaf_start *= 2
        # Node i has children 2i and 2i+1; leaves live at [leaf_start, leaf_start + capacity).
        self.nodes = np.zeros(2 * self.leaf_start, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def get(self, indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return self.nodes[self.leaf_start + indices]

    def set(self, indices: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        """Sets leaves (the last value wins for repeated indices) and repairs their ancestors."""
        nodes = self.leaf_start + np.asarray(indices, dtype=np.int64)
        self.nodes[nodes] = values
        parents = np.unique(nodes // 2)
        while parents[0] >= 1:
            self.nodes[parents] = self.nodes[2 * parents] + self.nodes[2 * parents + 1]
            if parents[0] == 1:
                break
            parents = np.unique(parents // 2)

    def find(self, prefix_sums: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """For each u in [0, total): the leaf i with sum(leaves[:i]) <= u < sum(leaves[:i+1])."""
        nodes = np.ones(len(prefix_sums), dtype=np.int64)
        remaining = np.asarray(prefix_sums, dtype=np.float64).copy()
        while nodes[0] < self.leaf_start:
            left = 2 * nodes
            left_sum = self.nodes[left]
            go_right = remaining >= left_sum
            remaining = np.where(go_right, remaining - left_sum, remaining)
            nodes = np.where(go_right, left + 1, left)
        leaves = nodes - self.leaf_start
        return np.minimum(leaves, self.capacity - 1)
