"""Tokenizers for the two model presets.

- ``tiny``: a byte-level BPE with LLaMA-3's special tokens, pre-tokenizer and chat template, trained
  deterministically on a small English corpus bundled with the package (``presets/tiny/corpus.txt``). The
  trained tokenizer is bundled too (``presets/tiny/tokenizer/``), so loading it needs neither training nor a
  download; ``python -m vlsa_platform.model.tokenizer --rebuild`` rewrites it from the corpus.
- ``paper``: LLaMA-3-8B-Instruct's own tokenizer, from the Hugging Face hub (or a local copy), with a chat
  template and a pad token set where the checkpoint lacks them. Only training loads it.

The LLM sees ``IMAGE_TOKEN[preset]`` at each visual position; for ``paper`` that is a reserved special token
LLaMA-3 already has, so the embedding matrix needs no resize.
"""

from __future__ import annotations

import argparse
import copy
import functools
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .markers import (
    BOS_TOKEN,
    END_HEADER_TOKEN,
    END_OF_TEXT_TOKEN,
    EOT_TOKEN,
    IMAGE_PLACEHOLDER,
    PAD_TOKEN,
    RESERVED_0_TOKEN,
    START_HEADER_TOKEN,
)

# The chat template of meta-llama/Meta-Llama-3-8B-Instruct (its tokenizer_config.json, verbatim).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# LLaMA-3's pre-tokenizer split (tiktoken's cl100k pattern): words with an optional leading non-letter, numbers
# in chunks of at most three digits, punctuation runs, newlines, other whitespace.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PAPER_TOKENIZER_SOURCE = "meta-llama/Meta-Llama-3-8B-Instruct"


# Order = id order at the end of the tiny vocabulary (LLaMA-3 also puts its specials last).
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    BOS_TOKEN,
    END_OF_TEXT_TOKEN,
    RESERVED_0_TOKEN,
    PAD_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
    IMAGE_PLACEHOLDER,
)

# Size of the tiny vocabulary, special tokens included (checked against the bundled file by the tests).
TINY_VOCAB_SIZE = 1024

# The token the LLM sees at each visual position, per preset.
IMAGE_TOKEN: dict[str, str] = {"tiny": IMAGE_PLACEHOLDER, "paper": RESERVED_0_TOKEN}

# Pad token for the paper tokenizer when the checkpoint has none: the first of these that exists in the
# vocabulary (LLaMA-3.1 has the first; LLaMA-3 has the second, id 128255), else the eos token.
PAPER_PAD_CANDIDATES: tuple[str, ...] = (PAD_TOKEN, "<|reserved_special_token_250|>")

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
TINY_CORPUS_PATH = PRESETS_DIR / "tiny" / "corpus.txt"
TINY_TOKENIZER_DIR = PRESETS_DIR / "tiny" / "tokenizer"


def _train_tiny_backend(corpus_path: Path) -> Tokenizer:
    """Train the byte-level BPE (``tokenizers``) on the corpus; specials are appended after training."""
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - len(TINY_SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # Paragraphs (blank-line separated) keep their newlines, so "\n" and "\n\n" get tokens of their own.
    text = corpus_path.read_text(encoding="utf-8")
    paragraphs = [p + "\n\n" for p in text.split("\n\n") if p.strip()]
    tok.train_from_iterator(paragraphs, trainer=trainer)
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
            for t in TINY_SPECIAL_TOKENS
        ]
    )
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
                special_tokens=[(BOS_TOKEN, bos_id)],
            ),
        ]
    )
    return tok


def build_tiny_tokenizer(corpus_path: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train the tiny preset's tokenizer from the bundled corpus (deterministic; well under a second)."""
    backend = _train_tiny_backend(Path(corpus_path) if corpus_path is not None else TINY_CORPUS_PATH)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOT_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )


def save_tiny_tokenizer(
    tokenizer: PreTrainedTokenizerBase, directory: str | Path = TINY_TOKENIZER_DIR
) -> None:
    """Write the tokenizer files; the chat template stays inside tokenizer_config.json (no .jinja file)."""
    tokenizer.save_pretrained(str(directory), save_jinja_files=False)


@functools.lru_cache(maxsize=4)
def _load_bundled(directory: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(directory)


def load_tiny_tokenizer(directory: str | Path | None = None) -> PreTrainedTokenizerFast:
    """The bundled tiny tokenizer. Loaded once per process; each call returns a copy, so callers may add
    tokens (e.g. ``vq_format: special``) without affecting each other."""
    return copy.deepcopy(_load_bundled(str(directory if directory is not None else TINY_TOKENIZER_DIR)))


def prepare_paper_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a LLaMA-3 tokenizer what training needs: the chat template, eos = ``<|eot_id|>`` (as in the
    Instruct model's config), a pad token, and the image token as one existing id."""
    vocab = tokenizer.get_vocab()
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    if EOT_TOKEN in vocab and tokenizer.eos_token != EOT_TOKEN:
        tokenizer.eos_token = EOT_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = next((t for t in PAPER_PAD_CANDIDATES if t in vocab), tokenizer.eos_token)
    if IMAGE_TOKEN["paper"] not in vocab:
        raise ValueError(
            f"tokenizer has no {IMAGE_TOKEN['paper']!r}: the paper preset needs a LLaMA-3 tokenizer "
            f"(e.g. {PAPER_TOKENIZER_SOURCE})"
        )
    return tokenizer


def load_tokenizer(preset: str, source: str | None = None) -> PreTrainedTokenizerBase:
    """``tiny``: the bundled tokenizer (``source`` may name another directory of tokenizer files).
    ``paper``: ``AutoTokenizer.from_pretrained(source or PAPER_TOKENIZER_SOURCE)``, prepared for training."""
    if preset == "tiny":
        return load_tiny_tokenizer(source)
    if preset == "paper":
        from transformers import AutoTokenizer

        return prepare_paper_tokenizer(AutoTokenizer.from_pretrained(source or PAPER_TOKENIZER_SOURCE))
    raise ValueError(f"unknown model preset {preset!r}; expected 'tiny' or 'paper'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlsa_platform.model.tokenizer",
        description="Build the tiny preset's tokenizer from the bundled corpus.",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help=f"retrain and rewrite the bundled files in {TINY_TOKENIZER_DIR}",
    )
    parser.add_argument(
        "--corpus", type=Path, default=TINY_CORPUS_PATH, help="training corpus (one text file)"
    )
    parser.add_argument("--out", type=Path, default=TINY_TOKENIZER_DIR, help="where --rebuild writes")
    args = parser.parse_args(argv)
    fresh = build_tiny_tokenizer(args.corpus)
    if args.rebuild:
        save_tiny_tokenizer(fresh, args.out)
        print(f"wrote {args.out} (vocab size {len(fresh)})")
        return 0
    bundled = load_tiny_tokenizer(args.out)
    same = bundled.get_vocab() == fresh.get_vocab()
    print(f"vocab size {len(fresh)}; bundled files {'match' if same else 'DIFFER from'} a fresh build")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
