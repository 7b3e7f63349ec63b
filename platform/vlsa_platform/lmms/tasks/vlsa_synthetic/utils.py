"""Document functions of the local tasks (``vlsa_synthetic_*``), which lmms-eval loads by file path (``!function
utils.<name>`` in the task YAML). The documents come from :mod:`vlsa_platform.lmms.synthetic_task`; images from the
bundled synthetic dataset, loaded as the platform's training and validation load them; exact match as the
platform's ``val/exact_match`` scores it."""

from __future__ import annotations

from typing import Any

from PIL import Image

from vlsa_platform.data.records import load_image
from vlsa_platform.data.synthetic import bundled_synthetic
from vlsa_platform.eval.answers import exact_match


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The document's image (none for a text-only question), RGB, from the bundled synthetic dataset."""
    return [load_image(str(bundled_synthetic()), doc["image"])] if doc.get("image") else []


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question as the record asks it, ``<image>`` placeholder included."""
    return str(doc["question"])


def process_exact_match(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """``exact_match``: 1.0 when the answer equals the reference after the platform's normalisation."""
    return {"exact_match": float(exact_match(results[0], doc["answer"]))}


def process_caption(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """The (reference, prediction) pair each caption metric aggregates."""
    pair = {"reference": doc["answer"], "prediction": results[0]}
    return {"bleu": (doc["answer"], results[0]), "cider": pair}


def _tokens(text: str) -> str:
    """Lower-case words without punctuation, space-separated (what CIDEr's n-grams are counted over; the COCO
    tasks use the PTB tokenizer, which needs Java)."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def cider(items: list[dict[str, str]]) -> float:
    """CIDEr (pycocoevalcap's scorer) of the predictions against their references, over the corpus."""
    from pycocoevalcap.cider.cider import Cider

    references = {i: [_tokens(item["reference"])] for i, item in enumerate(items)}
    predictions = {i: [_tokens(item["prediction"]) or "empty"] for i, item in enumerate(items)}
    score, _ = Cider().compute_score(references, predictions)
    return float(score)
