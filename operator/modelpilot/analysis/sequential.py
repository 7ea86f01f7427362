"""Always-valid comparison of candidate and stable error rates (mixture SPRT).

A rollout looks at its metrics every interval. A fixed-sample test repeated at every
look rejects a healthy candidate far more often than its nominal alpha; the mixture
sequential probability ratio test (mSPRT, Johari, Pekelis & Walsh, "Always valid
inference", 2017/2022) does not: its likelihood ratio is a non-negative martingale
under the null, so by Ville's inequality the chance it *ever* exceeds 1/alpha is at
most alpha, however often it is checked.

The test here is one-sided: H0 says the candidate's error rate is at most
``ratio * stable + tolerance``: ``tolerance`` is an absolute allowance and ``ratio`` a
relative one (``ratio=1.2``: "at most 20 % more errors than stable"). The contrast
``d = p_c - ratio * p_s`` is treated as Gaussian with the usual plug-in (unpooled) variance
``v_c + ratio^2 v_s``, and the alternative mixes over a half-normal prior of scale ``tau``
above ``tolerance``. With ``z = (d - tolerance) / sigma`` and ``rho = tau^2 / (sigma^2 + tau^2)``
the mixture likelihood ratio has the closed form

    Lambda = 2 * sqrt(1 - rho) * exp(rho * z^2 / 2) * Phi(z * sqrt(rho)),

and the always-valid p-value is ``p_n = min(p_{n-1}, 1 / Lambda_n)``; the caller keeps
``p_{n-1}`` (one float) between looks. The mirror-image test (H0': the candidate is
worse by at least the allowance) gives the early ``'ok'`` (non-inferiority shown).

A test that has neither rejected nor shown non-inferiority has no evidence either way, and
that is never a pass by itself. :func:`horizon_reached` says when enough traffic has been
seen that a stated regression would have been caught with a stated power: only then does
"no regression detected" mean something (the planned horizon).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr, ndtri

from modelpilot.api import defaults

Decision = Literal["regressed", "ok", "continue", "inconclusive"]

DEFAULT_ALPHA = defaults.ALPHA
# Mixing scale on the absolute error-rate difference. 1 percentage point is the best
# compromise over 0.25-5 point regressions on 0.5-5 % baselines (bench/sequential_vs_fixed.py).
DEFAULT_TAU = defaults.TAU
# Below a few hundred requests per arm the Gaussian approximation for rare errors is poor.
DEFAULT_MIN_SAMPLES = defaults.MIN_SAMPLES
# Pseudo-counts (Jeffreys-like) keep the plug-in variance positive when an arm has no
# errors yet; they only enter the variance, never the effect.
_PSEUDO_ERRORS = 0.5
_PSEUDO_TOTAL = 1.0


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """One look of the sequential error-rate test; persist ``p_value`` for the next look."""

    p_value: float
    likelihood_ratio: float
    decision: Decision
    effect: float
    n_stable: float
    n_candidate: float
    reason: str


def _plugin_variance(errors: NDArray, total: NDArray) -> NDArray:
    smoothed = (errors + _PSEUDO_ERRORS) / (total + _PSEUDO_TOTAL)
    return smoothed * (1.0 - smoothed) / np.maximum(total, 1.0)


def _log_half_normal_mixture(z: NDArray, rho: NDArray) -> NDArray:
    """log Lambda for a half-normal mixture over effects on the side of positive ``z``."""
    return math.log(2.0) + 0.5 * np.log1p(-rho) + 0.5 * rho * z * z + log_ndtr(z * np.sqrt(rho))


def _standardised_excess(
    stable_errors: ArrayLike,
    stable_total: ArrayLike,
    candidate_errors: ArrayLike,
    candidate_total: ArrayLike,
    tau: float,
    tolerance: float,
    ratio: float = 1.0,
) -> tuple[NDArray, NDArray]:
    """(z, rho): how far the observed contrast sits above ``tolerance``, in sigmas."""
    xs, ns, xc, nc = (
        np.asarray(a, dtype=float) for a in (stable_errors, stable_total, candidate_errors, candidate_total)
    )
    safe_ns, safe_nc = np.maximum(ns, 1.0), np.maximum(nc, 1.0)
    effect = xc / safe_nc - ratio * xs / safe_ns
    variance = ratio * ratio * _plugin_variance(xs, ns) + _plugin_variance(xc, nc)
    z = (effect - tolerance) / np.sqrt(variance)
    rho = tau * tau / (variance + tau * tau)
    return z, rho


def log_likelihood_ratio(
    stable_errors: ArrayLike,
    stable_total: ArrayLike,
    candidate_errors: ArrayLike,
    candidate_total: ArrayLike,
    *,
    tau: float = DEFAULT_TAU,
    tolerance: float = 0.0,
    ratio: float = 1.0,
) -> NDArray:
    """log of the mSPRT statistic for "candidate worse than ``ratio * stable + tolerance``".

    Vectorised over numpy arrays of cumulative counts so simulations and benchmarks can
    evaluate thousands of streams at once; the scalar API below wraps it.
    """
    z, rho = _standardised_excess(
        stable_errors, stable_total, candidate_errors, candidate_total, tau, tolerance, ratio
    )
    return _log_half_normal_mixture(z, rho)


def _validate(
    stable_errors: float,
    stable_total: float,
    candidate_errors: float,
    candidate_total: float,
    alpha: float,
    tau: float,
    min_samples: float,
    previous_p: float,
    tolerance: float,
    ratio: float,
) -> None:
    for label, errors, total in (
        ("stable", stable_errors, stable_total),
        ("candidate", candidate_errors, candidate_total),
    ):
        if not (math.isfinite(errors) and math.isfinite(total)) or errors < 0 or total < 0:
            raise ValueError(f"{label} counts must be finite and non-negative, got {errors}/{total}")
        if errors > total:
            raise ValueError(f"{label} errors ({errors}) exceed its requests ({total})")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not (tau > 0.0 and math.isfinite(tau)):
        raise ValueError(f"tau must be positive, got {tau}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be non-negative, got {min_samples}")
    if not 0.0 < previous_p <= 1.0:
        raise ValueError(f"previous_p must be in (0, 1], got {previous_p}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if not (ratio > 0.0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be positive, got {ratio}")


def msprt_two_proportions(
    stable_errors: float,
    stable_total: float,
    candidate_errors: float,
    candidate_total: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    tau: float = DEFAULT_TAU,
    min_samples: float = DEFAULT_MIN_SAMPLES,
    previous_p: float = 1.0,
    tolerance: float = 0.0,
    ratio: float = 1.0,
) -> SequentialResult:
    """Test whether the candidate's error rate exceeds ``ratio x stable + tolerance``.

    Counts are cumulative since the analysis started (floats are fine: Prometheus'
    ``increase()`` extrapolates). Decisions:

    - ``'inconclusive'``: either arm has fewer than ``min_samples`` requests; the p-value
      is carried over unchanged, and the look never counts as ``'ok'``.
    - ``'regressed'``: the always-valid p-value is at most ``alpha`` (sticky, since p only falls).
    - ``'ok'``: the mirror test shows the candidate is worse by less than the allowance
      (with ``tolerance=0`` and ``ratio=1`` that means shown to be *better*).
    - ``'continue'``: neither yet; no evidence either way (see :func:`horizon_reached`).
    """
    _validate(
        stable_errors,
        stable_total,
        candidate_errors,
        candidate_total,
        alpha,
        tau,
        min_samples,
        previous_p,
        tolerance,
        ratio,
    )
    n_stable, n_candidate = float(stable_total), float(candidate_total)
    effect = float(candidate_errors / max(n_candidate, 1.0) - ratio * stable_errors / max(n_stable, 1.0))

    if min(n_stable, n_candidate) < min_samples:
        decision: Decision = "regressed" if previous_p <= alpha else "inconclusive"
        return SequentialResult(
            p_value=previous_p,
            likelihood_ratio=1.0,
            decision=decision,
            effect=effect,
            n_stable=n_stable,
            n_candidate=n_candidate,
            reason=(
                f"needs {min_samples:g} requests per revision, "
                f"has stable={n_stable:g} candidate={n_candidate:g}"
            ),
        )

    z, rho = _standardised_excess(
        stable_errors, stable_total, candidate_errors, candidate_total, tau, tolerance, ratio
    )
    log_lr_worse = float(_log_half_normal_mixture(z, rho))
    log_lr_not_worse = float(_log_half_normal_mixture(-z, rho))
    likelihood_ratio = math.exp(min(log_lr_worse, 700.0))
    p_value = min(previous_p, math.exp(-max(log_lr_worse, 0.0)))
    allowance = f"tolerance {tolerance:.4%}" + (f", ratio {ratio:g}" if ratio != 1.0 else "")
    rates = f"candidate {effect:+.4%} vs {'' if ratio == 1.0 else f'{ratio:g} x '}stable ({allowance})"

    if p_value <= alpha:
        decision, reason = "regressed", f"error rate regressed: {rates}, p={p_value:.3g} <= alpha={alpha:g}"
    elif log_lr_not_worse >= math.log(1.0 / alpha):
        decision, reason = "ok", f"candidate not worse beyond tolerance: {rates}, p={p_value:.3g}"
    else:
        decision, reason = "continue", f"no decision yet: {rates}, p={p_value:.3g}"
    return SequentialResult(
        p_value=p_value,
        likelihood_ratio=likelihood_ratio,
        decision=decision,
        effect=effect,
        n_stable=n_stable,
        n_candidate=n_candidate,
        reason=reason,
    )


def _critical_z(rho: float, alpha: float) -> float:
    """The z at which the one-sided mSPRT statistic reaches 1/alpha (it is increasing in z)."""
    target = math.log(1.0 / alpha)

    def log_lr(z: float) -> float:
        return float(_log_half_normal_mixture(np.asarray(z), np.asarray(rho)))

    low, high = 0.0, 1.0
    while log_lr(high) < target:
        high *= 2.0
        if high > 1e6:
            return math.inf
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if log_lr(mid) < target else (low, mid)
    return high


@dataclass(frozen=True, slots=True)
class Horizon:
    """Whether a look is past the planned horizon, and how far along it is (0..1+)."""

    reached: bool
    progress: float
    reason: str


def horizon_reached(
    stable_errors: float,
    stable_total: float,
    candidate_total: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    tau: float = DEFAULT_TAU,
    tolerance: float = 0.0,
    ratio: float = 1.0,
    detectable_ratio: float = defaults.DETECTABLE_RATIO,
    detectable_increase: float = defaults.DETECTABLE_INCREASE,
    power: float = defaults.POWER,
    max_samples: float | None = None,
) -> Horizon:
    """Has the test seen enough that a real regression would have been caught by now?

    The regression to catch is a candidate rate of ``max(detectable_ratio x p_s,
    p_s + detectable_increase)``, with ``p_s`` the stable rate observed so far. At the current
    sample sizes the test's statistic for such a candidate would be about
    ``delta / sigma`` sigmas above the allowance; the horizon is reached once that clears the
    mSPRT's critical value by ``z_power`` (``P(caught) >= power`` at this look alone, ignoring
    the earlier looks, which only add to it). ``max_samples`` (candidate requests) sets the
    horizon directly instead.
    """
    if max_samples is not None and max_samples > 0:
        progress = candidate_total / max_samples
        return Horizon(
            progress >= 1.0, progress, f"horizon {candidate_total:g}/{max_samples:g} candidate requests"
        )
    p_s = (stable_errors + _PSEUDO_ERRORS) / (stable_total + _PSEUDO_TOTAL)
    p_alt = min(1.0, max(detectable_ratio * p_s, p_s + detectable_increase))
    delta = p_alt - (ratio * p_s + tolerance)
    if delta <= 0 or candidate_total <= 0:
        return Horizon(False, 0.0, "no planned horizon: the detectable regression is within the allowance")
    variance = p_alt * (1.0 - p_alt) / candidate_total + ratio * ratio * p_s * (1.0 - p_s) / max(
        stable_total, 1.0
    )
    sigma = math.sqrt(variance)
    rho = tau * tau / (variance + tau * tau)
    needed = _critical_z(rho, alpha) + float(ndtri(power))
    achieved = delta / sigma
    # Candidate requests scale sigma ~ 1/sqrt(n): progress^2 estimates the share of the way.
    progress = (achieved / needed) ** 2 if needed > 0 else 1.0
    what = f"a {p_alt:.3%} candidate (vs {p_s:.3%} stable) caught with power {power:g}"
    return Horizon(achieved >= needed, progress, f"horizon {min(progress, 1.0):.0%} of the way to {what}")
