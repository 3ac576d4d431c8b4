"""Burst shots: frames seconds apart from one camera, which look alike and are not copies.

A camera's burst (or a photographer's few tries at one scene) gives near-identical hashes, and
a dedup that moves all but one of them loses photos the user meant to keep (immich #31487). A
pair of contents is a **burst pair** when both have an EXIF time, at most
:data:`BURST_SECONDS` apart, from the same camera (EXIF make and model, at least one known).
Such a pair stays a duplicate only on a stricter rule: its pHashes within
:data:`BURST_MAX_HAMMING` bits (the same frame saved again) or CLIP cosine of at least
:data:`BURST_MIN_COSINE`; otherwise ``lookalike dedup`` shows it in a group of kind ``burst``,
which is never moved or deleted.
"""

from __future__ import annotations

from typing import Final

from services.records import ImageRecord

BURST_SECONDS: Final = 10
BURST_MAX_HAMMING: Final = 2
BURST_MIN_COSINE: Final = 0.98


def burst_gap(a: ImageRecord, b: ImageRecord) -> float | None:
    """Seconds between two shots of one burst; None when they are not one camera's shots
    :data:`BURST_SECONDS` or less apart."""
    if a.exif_datetime is None or b.exif_datetime is None:
        return None
    if not (a.camera_make or a.camera_model):
        return None
    if (a.camera_make, a.camera_model) != (b.camera_make, b.camera_model):
        return None
    gap = abs((a.exif_datetime - b.exif_datetime).total_seconds())
    return gap if gap <= BURST_SECONDS else None


def same_frame(hamming: int | None, cosine: float | None) -> bool:
    """The stricter rule a burst pair must pass to stay a duplicate."""
    return (hamming is not None and hamming <= BURST_MAX_HAMMING) or (
        cosine is not None and cosine >= BURST_MIN_COSINE
    )


def describe_burst(keeper: ImageRecord, other: ImageRecord) -> str:
    camera = " ".join(part for part in (other.camera_make, other.camera_model) if part)
    gap = burst_gap(keeper, other)
    seconds = f"{gap:g} s" if gap is not None else "seconds"
    return f"burst: shot {seconds} from the keeper on {camera} (a different shot, kept)"
