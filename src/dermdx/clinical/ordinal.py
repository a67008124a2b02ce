"""Ordinal outputs from K-1 "thicker than category k" binary heads (a cumulative-link model).

Melanoma thickness bands are ordered, so instead of a K-class head that ignores the order, K-1
binary heads each estimate P(y > k). Independently fitted heads can disagree with the order
(P(y > 1) above P(y > 0)); :func:`monotone` repairs that by raising each P(y > k) to the largest
P(y > j) for j >= k, which errs toward the thicker band: underestimating a melanoma's thickness is
the costlier mistake. Category probabilities are then differences of the cumulative ones, and the
point estimate is the median category (it minimises the expected error in categories).
"""

from __future__ import annotations

import numpy as np


def cumulative_targets(y: np.ndarray, n_categories: int) -> np.ndarray:
    """``[N, K-1]`` 0/1 targets ``y > k`` for categories ``y`` in ``0..K-1``."""
    y = np.asarray(y)
    if y.ndim != 1 or (len(y) and (y.min() < 0 or y.max() >= n_categories)):
        raise ValueError(f"ordinal targets must be a 1-D array of categories 0..{n_categories - 1}, got values {np.unique(y).tolist()}")
    return (y[:, None] > np.arange(n_categories - 1)[None, :]).astype(int)


def monotone(p_greater: np.ndarray) -> np.ndarray:
    """Make each row of P(y > k) non-increasing in k by a reverse running maximum."""
    p = np.asarray(p_greater, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected P(y > k) of shape [N, K-1], got {p.shape}")
    return np.maximum.accumulate(p[:, ::-1], axis=1)[:, ::-1]


def category_probs(p_greater: np.ndarray) -> np.ndarray:
    """``[N, K]`` category probabilities from (monotone-corrected) P(y > k) ``[N, K-1]``; rows sum to 1."""
    p = monotone(p_greater)
    ones = np.ones((len(p), 1))
    zeros = np.zeros((len(p), 1))
    return np.concatenate([ones, p], axis=1) - np.concatenate([p, zeros], axis=1)


def median_category(p_greater: np.ndarray) -> np.ndarray:
    """The median category per row: how many monotone P(y > k) reach 0.5."""
    return (monotone(p_greater) >= 0.5).sum(axis=1)
