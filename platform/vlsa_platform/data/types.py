"""The data layer's shared vocabulary: a conversation turn, a record, a skipped record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..model.markers import LABEL_GROUP_TEXT

Role = Literal["system", "user", "assistant"]

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
    "image_outside_root": "the image path leads out of the image root ('..', a symlink) or is malformed",
    "absolute_image_path": "the image path is absolute (or s3://) and allow_absolute_paths is off",
    "not_a_regular_file": "the image path names a directory, device, FIFO or socket, not a file",
    "unreadable_image": "the image cannot be decoded (corrupt or truncated)",
    "empty_image": "the image file is empty, or the image has a zero width or height",
    "image_too_large": "the image has more pixels than the limit",
    "too_long": "the sample cannot fit max_length even after truncating its text",
}


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. ``group`` tags cognition answers (``model.markers.LABEL_GROUP_*``)."""

    role: Role
    text: str
    group: int = LABEL_GROUP_TEXT


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


class BadSample(Exception):
    """A record or its image cannot be used. ``reason`` is a key of :data:`SKIP_REASONS`.

    Raised by the readers and by ``records.load_image`` (which knows only the image, so ``dataset``,
    ``index`` and ``id`` are filled in later with :meth:`for_record`). With ``on_bad_sample: fail`` it stops
    the run; with ``skip`` it becomes a :class:`Skip` (:meth:`to_skip`).
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        dataset: str | None = None,
        index: int | None = None,
        id: str | None = None,
    ) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {sorted(SKIP_REASONS)}")
        self.reason = reason
        self.detail = detail
        self.dataset = dataset
        self.index = index
        self.id = id
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.dataset is not None:
            where.append(f"dataset {self.dataset!r}")
        if self.index is not None:
            where.append(f"record {self.index}")
        if self.id is not None:
            where.append(f"(id {self.id!r})")
        head = " ".join(where)
        text = f"{self.reason}: {SKIP_REASONS[self.reason]}" + (f" — {self.detail}" if self.detail else "")
        return f"{head}: {text}" if head else text

    def for_record(self, dataset: str, index: int, id: str | None) -> BadSample:
        """The same error, naming the record it belongs to."""
        return BadSample(self.reason, self.detail, dataset=dataset, index=index, id=id)

    def to_skip(self) -> Skip:
        """The :class:`Skip` this error becomes under ``on_bad_sample: skip``."""
        return Skip(
            self.dataset or "", -1 if self.index is None else self.index, self.id, self.reason, self.detail
        )
