"""What the ``vlsa-platform evaluate`` tests share: the command in a subprocess with the offline environment, and
a task folder whose one task fails midway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from vlsa_platform.lmms.synthetic_task import TASK_DIR

#: The failing task of :func:`broken_tasks`, and what it raises.
BROKEN_TASK = "vlsa_broken_vqa"
BROKEN_MESSAGE = "broken on purpose"

_BROKEN_YAML = """include: _default_template_yaml
task: vlsa_broken_vqa
dataset_kwargs:
  data_files: vqa.jsonl
output_type: generate_until
generation_kwargs:
  max_new_tokens: 4
  until: []
process_results: !function utils.process_broken
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
_BROKEN_FUNCTION = f'''

def process_broken(doc, results):
    """Fails after the model answered: the task breaks midway."""
    raise RuntimeError("{BROKEN_MESSAGE}")
'''


def broken_tasks(folder: Path) -> Path:
    """A task folder (for ``--include-path``) holding :data:`BROKEN_TASK`: the local VQA task whose
    ``process_results`` raises once the model has answered."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("_default_template_yaml", "vqa.jsonl"):
        shutil.copy(TASK_DIR / name, folder / name)
    (folder / "utils.py").write_text((TASK_DIR / "utils.py").read_text() + _BROKEN_FUNCTION)
    (folder / f"{BROKEN_TASK}.yaml").write_text(_BROKEN_YAML)
    return folder


def run_evaluate(tmp: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """``vlsa-platform evaluate ARGS`` (this environment's interpreter), offline, one thread, the local MLflow
    store in ``tmp/work`` (``--workdir``)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf"),
        "OMP_NUM_THREADS": "1",  # the machine's cores are shared
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "vlsa_platform.cli", "evaluate", *args, "--workdir", str(tmp / "work")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
