"""Small conversions between Gymnasium's values and the wire format, shared by every driver."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def flat_observation(observation: Any) -> npt.NDArray[np.float32]:
    """An observation flattened row-major to float32 (a Discrete state becomes one float)."""
    return np.asarray(observation, dtype=np.float32).reshape(-1)


def mask_from_info(info: dict[str, Any]) -> npt.NDArray[np.bool_] | None:
    """The env's action mask from `info["action_mask"]` (Gymnasium's convention), if any."""
    mask = info.get("action_mask")
    if mask is None:
        return None
    return np.asarray(mask).astype(np.bool_).reshape(-1)
