"""Every analysis default the operator applies, in one place.

The rollout core, the statistics, the CRD schema defaults (a unit test compares them) and the
docs (`docs/analysis.md` quotes them) all read these names, so they cannot drift apart.
"""

from __future__ import annotations

# Rollout timing.
PROGRESS_DEADLINE_SECONDS = 600
SCALE_DOWN_DELAY_SECONDS = 30

# Analysis steps.
ANALYSIS_INTERVAL_SECONDS = 30.0
FAILURE_LIMIT = 1
INCONCLUSIVE_LIMIT = 20
ALPHA = 0.05
OUTAGE_TIMEOUT_SECONDS = 600.0
"""Metrics unreachable for this long: the candidate's traffic share goes to 0 until they return."""

# Sequential (always-valid) tests on counts: error rates, accuracy from labels, class shares.
MIN_SAMPLES = 500
"""Requests per arm before a sequential test may look (below a few hundred, the Gaussian
approximation behind the mSPRT is poor for rare errors), and before a threshold metric whose
provider knows its sample size (latency quantiles, queue time) may pass or fail."""
TAU = 0.01
"""Mixing scale of the mSPRT on the absolute difference of proportions (1 point)."""
DETECTABLE_RATIO = 2.0
"""The planned horizon: a step passes on "no regression" only once the test would have caught a
candidate with this many times the stable error rate ..."""
DETECTABLE_INCREASE = 0.005
"""... or, where the stable rate is near zero, one with this many more errors (0.5 points) ..."""
POWER = 0.98
"""... with this probability. So a 2x regression is promoted at most 2 % of the time."""

# Prediction drift: the candidate's predicted-class shares against the stable revision's.
DRIFT_TOLERANCE = 0.10
"""A class's share may move by up to 10 points between good models: two good retrains of the demo's
breast-cancer classifier (accuracy 0.90 and 0.97) predict the positive class 30 % and 39 % of the time."""
DRIFT_DETECTABLE_SHIFT = 0.20
"""The drift horizon: a share moved by 20 points must be caught with probability POWER (the demo's
biased build moves it by about 40)."""
DRIFT_TAU = 0.05
"""Mixing scale for class shares: shifts that matter are several points, not fractions of one."""

# Shadow rollouts: how often the mirrored candidate may answer differently from stable.
SHADOW_MIN_AGREEMENT = 0.97
"""Paired answers must agree at least this often (classification); a retrain of a good model
changes a few percent of answers, a broken one far more."""
