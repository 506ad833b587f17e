"""The train / validation split of MNIST's training set.

The training subset is drawn with its own seed (``data.split_seed``), not the run's ``seed``:
runs with different seeds then train on the same images, so seed-to-seed spread measures the
training procedure, not the luck of the draw. The validation set is everything else.
"""

import numpy as np

from reg_runner.errors import ConfigError


def split_indices(
    labels: np.ndarray, fraction: float, seed: int, stratified: bool = False, val_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training subset and of the validation set (the rest, optionally capped)."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    if stratified:
        parts = []
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            parts.append(rng.permutation(members)[: round(fraction * len(members))])
        train = np.sort(np.concatenate(parts))
    else:
        train = np.sort(rng.permutation(n)[: round(fraction * n)])
    if len(train) == 0:
        raise ConfigError("data.train_fraction", fraction, f"it selects no image of {n}; use a larger fraction")
    val = np.setdiff1d(np.arange(n), train, assume_unique=True)
    if val_size is not None and val_size < len(val):
        val = np.sort(rng.permutation(val)[:val_size])
    return train, val
