"""Deterministic sampling: the same request id gets the same decision in every replica and retry.

A keyed hash (not ``random``) lets a retried request, or the same id seen by two revisions during a
shadow/mirror, be captured consistently, and makes tests reproducible. Python's ``hash()`` is salted
per process, so BLAKE2 is used instead.
"""

from __future__ import annotations

import hashlib

__all__ = ["sample_point", "should_sample"]

_SCALE = float(1 << 64)


def sample_point(request_id: str) -> float:
    """A uniform-looking point in [0, 1) derived from the id alone."""
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def should_sample(request_id: str, rate: float) -> bool:
    """True for about ``rate`` of all ids; rate 0 never, rate 1 always (without hashing)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return sample_point(request_id) < rate
