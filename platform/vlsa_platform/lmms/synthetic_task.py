"""The documents of the local lmms-eval tasks (``tasks/vlsa_synthetic``), from the bundled synthetic data.

Each record of the synthetic validation split (``val.json``, held out from training) gives one question: its
first exchange — the first user turn (with its ``<image>`` placeholder where the record puts it) and the first
answer — which is also the first text answer the platform's validation decodes for ``val/exact_match`` from a
record without cognition turns. Questions with a short answer (a word or a number: colours, shapes,
positions, counts, yes/no, and the text-only questions) go to the exact-match task ``vlsa_synthetic_vqa``;
those whose answer is one of a closed set go also to the multiple-choice task ``vlsa_synthetic_mc``, the set
as its choices; descriptions go to the captioning task ``vlsa_synthetic_caption``.

The documents are shipped in the task folder (JSON lines, a few kB) beside the task files; images stay in the
bundled dataset (generated on first use; the task's ``doc_to_visual`` loads them from there). The synthetic
data is deterministic, so the documents are too; ``python -m vlsa_platform.lmms.synthetic_task`` writes them
again after it changes (a test compares the shipped ones with what this module makes).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..data.synthetic import COLORS, POSITIONS, SHAPES, SPLIT_FILES, bundled_synthetic
from . import TASKS_DIR

#: Folder of the local tasks (YAML, ``utils.py`` and the documents).
TASK_DIR = TASKS_DIR / "vlsa_synthetic"
#: Document files, by task kind.
DOC_FILES: dict[str, str] = {"vqa": "vqa.jsonl", "mc": "mc.jsonl", "caption": "caption.jsonl"}
#: The closed answer sets of the multiple-choice task (an answer belongs to at most one).
CHOICE_SETS: tuple[tuple[str, ...], ...] = (
    tuple(COLORS),
    SHAPES,
    tuple(POSITIONS),
    ("yes", "no"),
    tuple(str(n) for n in range(6)),
)
#: Answers of more words than this are descriptions (captions), not short answers.
SHORT_ANSWER_WORDS = 3


def _first_exchange(record: dict[str, Any]) -> tuple[str, str]:
    turns = record["conversations"]
    return str(turns[0]["value"]), str(turns[1]["value"])


def documents(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The documents of each task kind (``DOC_FILES``' keys), in the records' order."""
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in DOC_FILES}
    for record in records:
        question, answer = _first_exchange(record)
        doc = {"id": record["id"], "image": record.get("image"), "question": question, "answer": answer}
        if len(answer.split()) > SHORT_ANSWER_WORDS:
            out["caption"].append(doc)
            continue
        out["vqa"].append(doc)
        choices = next((c for c in CHOICE_SETS if answer in c), None)
        if choices is not None:
            out["mc"].append({**doc, "choices": list(choices), "label": choices.index(answer)})
    return out


def _lines(docs: list[dict[str, Any]]) -> Iterator[str]:
    for doc in docs:
        yield json.dumps(doc, sort_keys=True) + "\n"


def rendered(root: Path | None = None) -> dict[str, str]:
    """Each document file's text, from the bundled synthetic validation split (under ``root``, default: the
    cache's copy)."""
    base = root if root is not None else bundled_synthetic()
    records = json.loads((base / SPLIT_FILES["val"]).read_text())
    return {DOC_FILES[kind]: "".join(_lines(docs)) for kind, docs in documents(records).items()}


def write(folder: Path = TASK_DIR) -> list[Path]:
    """Write the document files into ``folder``; returns their paths."""
    written = []
    for name, text in rendered().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder", type=Path, default=TASK_DIR, help="where to write (default: the task folder)"
    )
    for path in write(parser.parse_args(argv).folder):
        print(path)


if __name__ == "__main__":
    main()


__all__ = ["CHOICE_SETS", "DOC_FILES", "TASK_DIR", "documents", "rendered", "write"]
