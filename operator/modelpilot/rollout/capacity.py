"""Capacity follows traffic: how many pods a revision needs for its share of the requests."""

from __future__ import annotations

import math


def candidate_replicas(total_replicas: int, weight: int | float, min_replicas: int = 1) -> int:
    """Replicas for a revision that takes ``weight`` % of the traffic: ceil(total x weight), at least min.

    Rounds up so the revision never has less capacity than its share; ``min_replicas``
    keeps a warm pod for a 0 % step (shadow, gate) so the next step does not wait for a cold
    start. Never more than ``total_replicas`` (unless min_replicas asks for more).
    """
    if total_replicas < 0 or min_replicas < 0 or not 0 <= weight <= 100:
        raise ValueError("need total_replicas >= 0, min_replicas >= 0 and 0 <= weight <= 100")
    share = math.ceil(total_replicas * weight / 100 - 1e-9)
    return max(min_replicas, min(total_replicas, share))


def stable_replicas(total_replicas: int, candidate_weight: int | float, min_replicas: int = 1) -> int:
    """Replicas stable keeps while the candidate takes ``candidate_weight`` %."""
    return candidate_replicas(total_replicas, 100 - candidate_weight, min_replicas)
