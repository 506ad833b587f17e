"""The train / validation split of a data family's training set.

The training subset is drawn with its own seed (``data.split_seed``), not the run's ``seed``:
runs with different seeds then train on the same images, so seed-to-seed spread measures the
training procedure, not the luck of the draw. The validation set is everything else, or a random
``val_size`` of it.
"""

import numpy as np

from reg_runner.errors import ConfigError


def split_indices(
    labels: np.ndarray, fraction: float, seed: int, stratified: bool = False, val_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training subset and of the validation set."""
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
        raise ConfigError("data.train_fraction", fraction, f"a larger fraction: this one selects no image of {n}")
    val = np.setdiff1d(np.arange(n), train, assume_unique=True)
    if len(val) == 0:
        raise ConfigError("data.train_fraction", fraction, f"a smaller fraction: this one leaves none of the {n} "
                          "images for validation, and the best epoch is chosen on validation")
    if val_size is not None:
        if val_size > len(val):
            raise ConfigError("data.val_size", val_size, f"at most {len(val)}, the images outside the training subset, "
                              "or null for all of them")
        if val_size < len(val):
            val = np.sort(rng.permutation(val)[:val_size])
    return train, val
