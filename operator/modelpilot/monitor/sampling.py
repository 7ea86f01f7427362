"""Deterministic review sampling: the same request id always gets the same decision.

A keyed BLAKE2 hash (not ``random``, not Python's per-process salted ``hash()``) makes the review
queue reproducible across restarts and retries. The key differs from the capture proxy's
sampling hash, so the review sample is independent of which requests were captured: with a
review rate q, about q of the *stored* predictions are queued, whatever the capture rate was.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)
_REVIEW_KEY = b"modelpilot-review"


def review_point(request_id: str) -> float:
    """A uniform-looking point in [0, 1) derived from the id alone."""
    digest = hashlib.blake2b(
        request_id.encode("utf-8", "surrogatepass"), digest_size=8, key=_REVIEW_KEY
    ).digest()
    return int.from_bytes(digest, "big") / _SCALE


def sampled_for_review(request_id: str, rate: float) -> bool:
    """True for about ``rate`` of all ids; 0 never, 1 always."""
    if rate <= 0.0:
        return False
    return rate >= 1.0 or review_point(request_id) < rate
