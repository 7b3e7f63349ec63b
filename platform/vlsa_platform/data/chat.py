"""Tokenizing a conversation in LLaMA-3's chat layout with exact label spans (paper §3.3, DESIGN.md §2).

The token sequence is exactly what tokenizing ``tokenizer.apply_chat_template(turns, tokenize=False)`` gives
(LLaMA-3-Instruct's template: ``<|begin_of_text|>``, then per turn
``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content | trim}<|eot_id|>``), with each ``<image>``
placeholder expanded to ``visual_tokens[i]`` copies of the image token. It is built turn by turn rather than by
tokenizing the rendered text, so that the label spans are known without offsets: the text between two special
tokens is tokenized on its own either way (special tokens split the input before the BPE sees it, and LLaMA-3's
pre-tokenizer makes the header's ``\\n\\n`` a piece of its own), so the pieces concatenate to the same ids. The
tests check this equality against the template.

Labels are ``IGNORE_INDEX`` everywhere except the assistant turns' content tokens and their ``<|eot_id|>`` (the
model must learn to stop); ``label_groups`` carries the turn's ``group`` (VQ / pixel cognition answers) on those
same positions and 0 elsewhere.

Truncation (``max_length``), from the end: whole trailing exchanges (a user turn and the assistant turns after
it) are dropped first, so the sequence still ends with an answer; if the exchanges that must stay (the first
one, or up to the last one holding an image) are still too long, the last kept assistant answer is cut at a
token boundary and loses its ``<|eot_id|>`` (it did not end there, so the model must not learn to stop there).
Image tokens are never cut. If not even one answer token fits after the image(s), the sample is
``BadSample("too_long")``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..model.markers import (
    BOS_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    LABEL_GROUP_TEXT,
    START_HEADER_TOKEN,
)
from .types import BadSample, Turn

#: What separates a header from its content (``'<|end_header_id|>\n\n'`` in the template).
_HEADER_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Encoded:
    """One tokenized conversation; all three are ``(T,)`` long tensors.

    Attributes:
        input_ids: the chat tokens, image positions holding the image token id.
        labels: ``input_ids`` on assistant content + ``<|eot_id|>`` positions, ``IGNORE_INDEX`` elsewhere.
        label_groups: the turn's ``group`` on labelled positions, 0 elsewhere.
        truncated: whether turns were dropped or an answer was cut to fit ``max_length``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    label_groups: torch.Tensor
    truncated: bool = False

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class _Block:
    """One turn's tokens: the header (never labelled), the content, the closing ``<|eot_id|>``."""

    role: str
    header: list[int]
    content: list[int]
    labelled: bool
    group: int
    has_image: bool
    eot: bool = True

    def __len__(self) -> int:
        return len(self.header) + len(self.content) + int(self.eot)


class ChatEncoder:
    """Encodes conversations for one tokenizer and image token; caches the special ids and role headers.

    Args:
        tokenizer: a tokenizer with LLaMA-3's special tokens (the tiny one, or LLaMA-3-8B-Instruct's).
        image_token: the token the LLM sees at each visual position (``IMAGE_TOKEN[preset]``).
        placeholder: the text marking an image in a turn (LLaVA's ``<image>``).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_token: str,
        placeholder: str = IMAGE_PLACEHOLDER,
    ) -> None:
        self.tokenizer = tokenizer
        self.placeholder = placeholder
        self.image_token = image_token
        vocab = tokenizer.get_vocab()  # 128K entries for LLaMA-3: built once
        ids = {}
        for token in (BOS_TOKEN, START_HEADER_TOKEN, END_HEADER_TOKEN, EOT_TOKEN, image_token):
            if token not in vocab:
                raise ValueError(f"the tokenizer has no {token!r} token")
            ids[token] = int(vocab[token])
        self.bos_id, self.eot_id = ids[BOS_TOKEN], ids[EOT_TOKEN]
        self._start_header, self._end_header = ids[START_HEADER_TOKEN], ids[END_HEADER_TOKEN]
        self.image_token_id = ids[image_token]
        # The Rust tokenizer directly: one batched call per conversation, without the Python wrapper's overhead.
        self._backend = tokenizer.backend_tokenizer if getattr(tokenizer, "is_fast", False) else None
        self._headers: dict[str, list[int]] = {}

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _header(self, role: str) -> list[int]:
        if role not in self._headers:
            role_ids, sep_ids = self._tokenize([role, _HEADER_SEPARATOR])
            self._headers[role] = [self._start_header, *role_ids, self._end_header, *sep_ids]
        return self._headers[role]

    def encode(self, turns: Sequence[Turn], visual_tokens: Sequence[int], max_length: int) -> Encoded:
        """Tokenize ``turns``; the i-th ``<image>`` placeholder becomes ``visual_tokens[i]`` image tokens.

        Raises:
            BadSample: ``image_placeholder`` if the placeholders and ``visual_tokens`` disagree in number;
                ``too_long`` if the turns up to the last image plus one answer token exceed ``max_length``.
        """
        pieces = [t.text.strip().split(self.placeholder) for t in turns]  # `| trim`, as the template
        n_images = sum(len(p) - 1 for p in pieces)
        if n_images != len(visual_tokens):
            raise BadSample(
                "image_placeholder",
                f"{n_images} {self.placeholder} placeholder(s) but {len(visual_tokens)} image(s)",
            )
        flat = self._tokenize([text for turn_pieces in pieces for text in turn_pieces])
        blocks, k, image = [], 0, 0
        for turn, turn_pieces in zip(turns, pieces, strict=True):
            content: list[int] = []
            for j in range(len(turn_pieces)):
                if j:
                    content += [self.image_token_id] * int(visual_tokens[image])
                    image += 1
                content += flat[k]
                k += 1
            labelled = turn.role == "assistant"
            blocks.append(
                _Block(
                    turn.role, self._header(turn.role), content, labelled, turn.group, len(turn_pieces) > 1
                )
            )
        kept, truncated = _fit(blocks, max_length - 1)  # 1 for <|begin_of_text|>
        return self._assemble(kept, truncated)

    def _assemble(self, blocks: list[_Block], truncated: bool) -> Encoded:
        ids, labels, groups = [self.bos_id], [IGNORE_INDEX], [LABEL_GROUP_TEXT]
        for b in blocks:
            body = b.content + ([self.eot_id] if b.eot else [])
            ids += b.header + body
            labels += [IGNORE_INDEX] * len(b.header)
            groups += [LABEL_GROUP_TEXT] * len(b.header)
            if b.labelled:
                labels += body
                groups += [b.group] * len(body)
            else:
                labels += [IGNORE_INDEX] * len(body)
                groups += [LABEL_GROUP_TEXT] * len(body)
        as_long = functools.partial(torch.tensor, dtype=torch.long)
        return Encoded(as_long(ids), as_long(labels), as_long(groups), truncated)


def _fit(blocks: list[_Block], budget: int) -> tuple[list[_Block], bool]:
    """Drop trailing exchanges, then cut the last kept answer, until the blocks fit ``budget`` tokens."""
    lengths = [len(b) for b in blocks]
    if sum(lengths) <= budget:
        return blocks, False
    # An exchange runs from a user turn to the next one; turns before the first (a system prompt) always stay,
    # and so does every exchange up to the one holding the last image.
    users = [i for i, b in enumerate(blocks) if b.role == "user"]
    ends = [*users[1:], len(blocks)]
    last_image = max((i for i, b in enumerate(blocks) if b.has_image), default=-1)
    keep = next(e for e in ends if e > last_image)
    keep = max([e for e in ends if e >= keep and sum(lengths[:e]) <= budget], default=keep)
    kept = blocks[:keep]
    overflow = sum(lengths[:keep]) - budget
    if overflow <= 0:
        return kept, True
    # Still too long: cut the last kept answer at a token boundary; it keeps at least one token.
    answer = kept[-1]
    room = len(answer.content) + 1 - overflow  # answer tokens that fit once <|eot_id|> goes
    if not answer.labelled or answer.has_image or room < 1:
        answer_tokens = len(answer.content) + 1 if answer.labelled else 0
        need = sum(lengths[:keep]) + 1 - answer_tokens + 1  # + <|begin_of_text|>, + one answer token
        raise BadSample(
            "too_long",
            f"the prompt and image tokens need {need} tokens with one answer token; max_length is {budget + 1}",
        )
    kept[-1] = _Block(answer.role, answer.header, answer.content[:room], True, answer.group, False, eot=False)
    return kept, True


@functools.lru_cache(maxsize=8)
def _encoder(tokenizer: PreTrainedTokenizerBase, image_token: str) -> ChatEncoder:
    return ChatEncoder(tokenizer, image_token)


def encode_conversation(
    turns: Sequence[Turn],
    tokenizer: PreTrainedTokenizerBase,
    image_token: str,
    visual_tokens: Sequence[int],
    max_length: int,
) -> Encoded:
    """Tokenize one conversation in LLaMA-3's chat layout (see the module docstring); a :class:`ChatEncoder`
    is cached per tokenizer and image token."""
    return _encoder(tokenizer, image_token).encode(turns, visual_tokens, max_length)


__all__ = ["ChatEncoder", "Encoded", "encode_conversation"]
