"""Platt scaling: a calibrated probability from a raw logit."""

from __future__ import annotations

import numpy as np


def fit_platt(logits: np.ndarray, labels: np.ndarray, l2: float) -> tuple[float, float]:
    """Fit p = sigmoid(a * logit + b) by damped Newton's method (numpy, float64).

    Plain Newton overshoots when the logits are spread wide and the labels nearly
    separable (it returned a = 2e6, a step function, on such data): each step is
    halved until the objective does not increase.

    Args:
        logits: raw logits on held-out rows.
        labels: 0/1 outcomes.
        l2: ridge towards (1, 0), for stability with few positives.

    Returns:
        (a, b).
    """
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    prior = np.array([1.0, 0.0])

    def objective(c: np.ndarray) -> float:
        z = design @ c
        # Stable log-loss: log(1 + e^z) - y z.
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * np.sum((c - prior) ** 2))

    coef = prior.copy()
    current = objective(coef)
    for _ in range(100):
        p = 0.5 * (1.0 + np.tanh(0.5 * (design @ coef)))
        grad = design.T @ (p - y) + l2 * (coef - prior)
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6:
            trial = coef - scale * step
            value = objective(trial)
            if value <= current:
                break
            scale *= 0.5
        coef, current = trial, value
        if np.abs(scale * step).max() < 1e-10:
            break
    return float(coef[0]), float(coef[1])
