"""A deterministic grid world with walls, lava and a goal: `agentserve/GridWorld-v0`.

Layout characters: `S` start, `G` goal (+20, ends the episode), `L` lava (-10, ends the episode),
`#` wall (cannot be entered), `.` floor. Every move costs -1, also a move into a wall or the edge
(the agent then stays put). Observation: the cell index `row * width + col`. Actions: 0 up,
1 right, 2 down, 3 left. `info["action_mask"]` flags the moves that do not bump into a wall or the
edge (Gymnasium's convention, as in Taxi).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

DEFAULT_LAYOUT = (
    "S..#....",
    ".#.#.##.",
    ".#...#..",
    ".##L.#.#",
    "...L...G",
)
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
STEP_REWARD = -1.0
GOAL_REWARD = 20.0
LAVA_REWARD = -10.0


class GridWorldEnv(gym.Env[np.int64, np.int64]):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012  (Gymnasium declares it an instance field)

    def __init__(self, layout: tuple[str, ...] = DEFAULT_LAYOUT, render_mode: str | None = None):
        widths = {len(row) for row in layout}
        if len(widths) != 1:
            raise ValueError("every layout row must have the same width")
        self.layout = tuple(layout)
        self.height, self.width = len(layout), widths.pop()
        cells = "".join(layout)
        if cells.count("S") != 1 or "G" not in cells:
            raise ValueError("a layout needs exactly one S and at least one G")
        self.start = cells.index("S")
        self.observation_space = gym.spaces.Discrete(self.height * self.width)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.render_mode = render_mode
        self.state = self.start

    def cell(self, state: int) -> str:
        return self.layout[state // self.width][state % self.width]

    def transition(self, state: int, action: int) -> tuple[int, float, bool]:
        """The model: (next_state, reward, terminated) of taking `action` in `state`."""
        row, col = divmod(state, self.width)
        d_row, d_col = MOVES[action]
        r, c = row + d_row, col + d_col
        next_state = state
        if 0 <= r < self.height and 0 <= c < self.width and self.layout[r][c] != "#":
            next_state = r * self.width + c
        kind = self.cell(next_state)
        if kind == "G":
            return next_state, GOAL_REWARD, True
        if kind == "L":
            return next_state, LAVA_REWARD, True
        return next_state, STEP_REWARD, False

    def action_mask(self, state: int) -> npt.NDArray[np.int8]:
        """1 for each move that changes the cell."""
        return np.array(
            [self.transition(state, a)[0] != state for a in range(len(MOVES))], dtype=np.int8
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = self.start
        return np.int64(self.state), {"action_mask": self.action_mask(self.state)}

    def step(self, action: np.int64) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}")
        self.state, reward, terminated = self.transition(self.state, int(action))
        info = {"action_mask": self.action_mask(self.state)}
        return np.int64(self.state), reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rows = [list(row) for row in self.layout]
        r, c = divmod(self.state, self.width)
        rows[r][c] = "A"
        return "\n".join("".join(row) for row in rows) + "\n"


def optimal_return(env: GridWorldEnv, horizon: int, gamma: float = 1.0) -> float:
    """The best achievable return from the start within `horizon` steps (finite-horizon DP)."""
    n = env.height * env.width
    value = np.zeros(n)
    for _ in range(horizon):
        new = np.full(n, -np.inf)
        for s in range(n):
            if env.cell(s) in "#GL":
                new[s] = 0.0
                continue
            for a in range(len(MOVES)):
                s2, r, done = env.transition(s, a)
                new[s] = max(new[s], r + (0.0 if done else gamma * value[s2]))
        value = new
    return float(value[env.start])
