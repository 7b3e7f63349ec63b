"""The local lmms-eval tasks' documents (vlsa_platform/lmms/synthetic_task.py) and task files."""

from __future__ import annotations

import json

import yaml

from vlsa_platform.data.synthetic import SPLIT_FILES, bundled_synthetic
from vlsa_platform.lmms import TASKS_DIR
from vlsa_platform.lmms.synthetic_task import CHOICE_SETS, DOC_FILES, TASK_DIR, documents, rendered

from .helpers import task_docs


def test_the_shipped_documents_are_those_of_the_bundled_synthetic_data():
    for name, text in rendered().items():
        assert (TASK_DIR / name).read_text() == text, (
            f"{name} is stale: run `python -m vlsa_platform.lmms.synthetic_task`"
        )


def test_each_question_is_the_first_exchange_of_a_validation_record():
    records = {r["id"]: r for r in json.loads((bundled_synthetic() / SPLIT_FILES["val"]).read_text())}
    vqa, mc, caption = task_docs("vqa"), task_docs("mc"), task_docs("caption")
    assert len(vqa) + len(caption) == len(records)  # every record once, as a question or a description
    assert len(mc) > 20 and len(caption) > 10 and any(d["image"] is None for d in vqa)  # text-only ones too
    for doc in vqa + caption:
        first, answer = records[doc["id"]]["conversations"][:2]
        assert (doc["question"], doc["answer"], doc["image"]) == (
            first["value"],
            answer["value"],
            records[doc["id"]].get("image"),
        )
    assert all(len(d["answer"].split()) == 1 for d in vqa) and all(
        len(d["answer"].split()) > 3 for d in caption
    )
    for doc in mc:
        assert doc["choices"][doc["label"]] == doc["answer"] and tuple(doc["choices"]) in CHOICE_SETS


def test_an_answer_outside_every_choice_set_is_no_multiple_choice_question():
    records = [
        {"id": "a", "image": "x.png", "conversations": [{"value": "<image>\nQ?"}, {"value": "maybe"}]},
        {"id": "b", "image": "x.png", "conversations": [{"value": "<image>\nQ?"}, {"value": "blue"}]},
    ]
    docs = documents(records)
    assert [d["id"] for d in docs["vqa"]] == ["a", "b"] and [d["id"] for d in docs["mc"]] == ["b"]


def test_the_task_files_name_the_shipped_documents():
    tasks = {}
    for path in TASK_DIR.glob("*.yaml"):
        text = path.read_text().replace("!function", "")  # lmms-eval's tag; a plain string here
        tasks[path.name] = yaml.safe_load(text)
    files = {t["task"]: t["dataset_kwargs"]["data_files"] for t in tasks.values() if "dataset_kwargs" in t}
    assert files == {f"vlsa_synthetic_{kind}": name for kind, name in DOC_FILES.items()}
    assert tasks["vlsa_synthetic.yaml"]["task"] == [f"vlsa_synthetic_{kind}" for kind in DOC_FILES]
    assert TASK_DIR.parent == TASKS_DIR
