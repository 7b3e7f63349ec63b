"""A tiny run's export evaluated through the real lmms-eval (``simple_evaluate`` and the ``lmms-eval`` command)
on the local exact-match task gives the platform's own validation score on the same questions (issue 18's
first "What it must show"); the multiple-choice task runs through ``loglikelihood``; an unknown task and an
export of another model are refused before the model loads.

lmms-eval lives in the evaluation environment (``make install-eval``; ``make test-e2e`` builds it): its
interpreter runs in subprocesses. The export is the tiny model as ``--scale tiny`` starts it (its bundled
pretrained LLM answers some of the held-out questions right, not all).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from vlsa_platform.data.dataset import VLSADataset, collate
from vlsa_platform.data.synthetic import bundled_synthetic
from vlsa_platform.data.types import Record, Turn
from vlsa_platform.eval.answers import exact_match
from vlsa_platform.eval.generation import greedy_answers
from vlsa_platform.eval.questions import samples_from_batch
from vlsa_platform.eval.validation import GenerationSettings, Tally, decode_samples
from vlsa_platform.lmms import TASKS_DIR
from vlsa_platform.lmms.loading import load_export

from .helpers import eval_python, export_tiny, fake_export, task_docs, tiny_experiment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not eval_python().exists(),
        reason=f"no evaluation environment at {eval_python()}: `make install-eval` builds it (make test-e2e does)",
    ),
]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("run"))


def _env(tmp: Path) -> dict[str, str]:
    """Offline: the local task needs no hub, and nothing may reach it; the datasets cache in ``tmp``."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}


def platform_scores(export: Path, config: Path) -> tuple[float, list[bool]]:
    """``val/exact_match`` over the local VQA task's questions, computed as validation computes it (each
    question a record: chat encoding, collate, greedy decoding, normalised exact match); and each question's
    outcome, from the same greedy answers."""
    loaded = load_export(export, config)
    docs = task_docs("vqa")
    records = [
        Record(d["id"], "val", i, d["image"], (Turn("user", d["question"]), Turn("assistant", d["answer"])))
        for i, d in enumerate(docs)
    ]
    dataset = VLSADataset(
        records,
        tokenizer=loaded.tokenizer,
        config=loaded.model.config,
        image_roots={"val": str(bundled_synthetic())},
        max_length=loaded.experiment.data.max_length,
        on_bad_sample="fail",
    )
    extra = loaded.experiment.data.validation.generate_extra_tokens
    settings = GenerationSettings.for_model(
        loaded.tokenizer, loaded.model, samples=len(docs), extra_tokens=extra
    )
    samples = []
    for first in range(0, len(records), 8):
        batch = collate(
            [dataset[i] for i in range(first, min(first + 8, len(records)))], loaded.tokenizer.pad_token_id
        )
        samples += samples_from_batch(batch, settings.image_token_id, settings.stop_ids[0])
    tally = Tally()
    torch.manual_seed(0)
    decode_samples(loaded.model, samples, settings, tally)
    items = [(s, s.answers[0]) for s in samples]
    budgets = [len(a.reference) + 1 + extra for _, a in items]
    answers = greedy_answers(
        loaded.model, items, budgets, stop_ids=settings.stop_ids, pad_token_id=settings.pad_token_id
    )
    outcomes = [exact_match(settings.decode(a), d["answer"]) for a, d in zip(answers, docs, strict=True)]
    return tally.means()["exact_match"], outcomes


def test_lmms_eval_scores_the_export_as_the_platforms_validation_does(exported, tmp_path):
    export, config = exported
    expected, outcomes = platform_scores(export, config)
    assert 0.0 < expected < 1.0  # some right, some wrong: agreement is not a coincidence of extremes
    assert expected == pytest.approx(sum(outcomes) / len(outcomes))

    other, _ = fake_export(tmp_path / "other", tiny_experiment("model.vision=lowres", "model.recon=false"))
    out = tmp_path / "found.json"
    run = subprocess.run(
        [str(eval_python()), str(HERE / "in_eval_env.py"), str(export), str(config), str(other), str(out)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    found = json.loads(out.read_text())
    assert found["registered"]  # `--model vlsa` resolves to the adapter through the entry point
    assert "is not the model of the experiment config" in found["other_export"]
    assert (
        "vision_mode: the export has 'lowres', the experiment gives 'sa_perceiver'" in found["other_export"]
    )

    # (b) simple_evaluate: the same score, question by question.
    results = found["results"]
    assert results["vlsa_synthetic_vqa"]["exact_match,none"] == pytest.approx(expected)
    assert [bool(found["vqa"][str(i)]) for i in range(len(outcomes))] == outcomes
    # The multiple-choice task through loglikelihood: one (log-prob, is-greedy) pair per choice.
    mc = task_docs("mc")
    assert [len(r) for r in found["mc_resps"]] == [len(d["choices"]) for d in mc]
    assert all(ll <= 0.0 and isinstance(greedy, bool) for r in found["mc_resps"] for ll, greedy in r)
    assert 0.0 <= results["vlsa_synthetic_mc"]["acc,none"] <= 1.0
    caption = results["vlsa_synthetic_caption"]
    assert caption["bleu,none"] >= 0.0 and caption["cider,none"] >= 0.0

    # (c) the lmms-eval command.
    output = tmp_path / "cli"
    command = [
        str(eval_python().parent / "lmms-eval"),
        "--model", "vlsa",
        "--model_args", f"pretrained={export},config={config}",
        "--batch_size", "4",
        "--tasks", "vlsa_synthetic_vqa",
        "--include_path", str(TASKS_DIR),
        "--output_path", str(output),
        "--verbosity", "WARNING",
    ]  # fmt: skip
    cli = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    (written,) = output.rglob("*_results.json")
    score = json.loads(written.read_text())["results"]["vlsa_synthetic_vqa"]["exact_match,none"]
    assert score == pytest.approx(expected), cli.stdout[-2000:]


def test_an_unknown_task_is_refused_before_the_model_loads(tmp_path):
    """The export does not exist: had the model been loaded first, the error would name it. (lmms-eval's command
    exits 0 after any error unless ``--verbosity DEBUG``, which re-raises it.)"""
    command = [
        str(eval_python().parent / "lmms-eval"),
        "--model", "vlsa",
        "--model_args", f"pretrained={tmp_path / 'absent'},config={tmp_path / 'absent.yaml'}",
        "--tasks", "vlsa_synthetic_vqa,vlsa_synthetic_nope",
        "--include_path", str(TASKS_DIR),
        "--verbosity", "DEBUG",
    ]  # fmt: skip
    run = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    text = run.stdout + run.stderr
    assert run.returncode != 0 and "Tasks not found: vlsa_synthetic_nope" in text, text[-3000:]
    assert "no such folder" not in text
