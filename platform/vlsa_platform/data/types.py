"""The data layer's shared vocabulary: a conversation turn, a record, a skipped record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]

#: ``Turn.group`` of ordinary text, and of cognition answers (``label_groups`` in the model's batch).
GROUP_TEXT, GROUP_VQ, GROUP_PX = 0, 1, 2

#: Reasons a record is skipped (``on_bad_sample: skip``) or stops the run (``fail``), as reported by
#: ``data inspect`` and counted in tracking.
SKIP_REASONS: dict[str, str] = {
    "bad_json": "the line or file is not valid JSON",
    "bad_record": "the record is not an object, or a field has the wrong type",
    "missing_key": "a required key (conversations, from, value) is missing",
    "empty_conversation": "no turns, or a turn with empty text",
    "role_order": "roles are unknown or out of order (human/gpt must alternate, human first)",
    "image_placeholder": "the <image> placeholder is missing from, or repeated in, an image record",
    "missing_image": "the image file does not exist",
    "unreadable_image": "the image cannot be decoded (corrupt or truncated)",
    "empty_image": "the image has a zero width or height",
    "image_too_large": "the image has more pixels than the limit",
    "too_long": "the sample cannot fit max_length even after truncating its text",
}


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. ``group`` tags cognition answers (``GROUP_VQ``/``GROUP_PX``)."""

    role: Role
    text: str
    group: int = GROUP_TEXT


@dataclass(frozen=True)
class Record:
    """One LLaVA-format sample, normalised.

    Attributes:
        id: the record's ``id`` (or ``"<dataset>:<index>"`` when it has none).
        dataset: name of the dataset it came from.
        index: position in its source file (0-based), for messages.
        image: the image path as written in the record, ``None`` for text-only samples.
        turns: the conversation; user turns first and alternating; the ``<image>`` placeholder stays where it
            stands in the first user turn.
    """

    id: str
    dataset: str
    index: int
    image: str | None
    turns: tuple[Turn, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Skip:
    """A record that was not used, and why (``reason`` is a key of :data:`SKIP_REASONS`)."""

    dataset: str
    index: int
    id: str | None
    reason: str
    detail: str = ""
