"""Run by the evaluation environment's interpreter (``make install-eval``) from ``test_lmms_eval.py``: the VLSA
lmms-eval model over an export, through ``lmms_eval.evaluator.simple_evaluate`` on the local tasks; and the
constructor's refusal of an export of another model. Writes what it found as JSON.

Usage: python in_eval_env.py EXPORT CONFIG OTHER_EXPORT OUT_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(export: str, config: str, other_export: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)  # the machine's cores are shared
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from vlsa_platform.lmms import TASKS_DIR
    from vlsa_platform.lmms.loading import ExportError
    from vlsa_platform.lmms.model import VLSA

    found: dict = {"registered": get_model("vlsa") is VLSA}
    try:
        VLSA(pretrained=other_export, config=config)
        found["other_export"] = None
    except ExportError as err:
        found["other_export"] = str(err)

    model = VLSA(pretrained=export, config=config, batch_size=4)
    tasks = ["vlsa_synthetic_vqa", "vlsa_synthetic_mc", "vlsa_synthetic_caption"]
    results = simple_evaluate(
        model=model,
        tasks=tasks,
        task_manager=TaskManager("WARNING", include_path=str(TASKS_DIR)),
        log_samples=True,
        verbosity="WARNING",
    )
    found["results"] = {task: results["results"][task] for task in tasks}
    samples = results["samples"]
    found["vqa"] = {s["doc_id"]: s["exact_match"] for s in samples["vlsa_synthetic_vqa"]}
    found["mc_resps"] = [[list(r) for r in s["filtered_resps"]] for s in samples["vlsa_synthetic_mc"]]
    Path(out).write_text(json.dumps(found, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:])
