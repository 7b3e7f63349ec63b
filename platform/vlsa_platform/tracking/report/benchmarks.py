"""Which benchmark score is which column of the report's Table-3 table, and under which ability.

An evaluation logs lmms-eval's scores into a run as ``eval/<task>/<metric>`` (the lmms-eval task name, then the
metric as the task file names it: ``eval/mme/mme_perception_score``, ``eval/gqa/exact_match``). Each benchmark
of the paper is one :class:`Benchmark`: the lmms-eval task and the metric the paper reports (its *main* metric),
the paper's column label, the ability it measures and whether higher is better. :data:`BENCHMARKS` holds them in
the order the table shows them; :func:`columns` picks the ones some run logged and adds a column for every
other task (its first metric, ability ``other``, direction unknown).

The abilities are the paper's (§4.3, "Ablation study", the paragraph under Table 3): "ChartQA, DocVQA, and
MME-perception, which primarily evaluate perceptive capabilities; MME-cognition, focusing on cognitive
abilities; and AI2D, SQA-I, SQA, and VizWiz, which comprehensively assess both perception and cognition".
The paper assigns no ability to the benchmarks of Tables 1-2 (VQAv2, GQA, TextVQA, POPE, MMBench, ...): they
form their own group, ``general``, rather than one guessed here. The local synthetic tasks
(``vlsa_platform.lmms``) are ``local``. Task names and metrics are lmms-eval 0.7.3's (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from .. import names

Ability = Literal["perception", "cognition", "both", "general", "local", "other"]
ABILITIES: tuple[Ability, ...] = ("perception", "cognition", "both", "general", "local", "other")
"""The column groups, left to right: the paper's three (§4.3, in the order it names them), then the rest."""
ABILITY_TITLES: Mapping[Ability, str] = {
    "perception": "perception",
    "cognition": "cognition",
    "both": "perception & cognition",
    "general": "Tables 1-2 (no ability given)",
    "local": "local synthetic tasks",
    "other": "other tasks",
}
"""Each group's heading in the table."""
EVAL_PREFIX = names.EVAL_PREFIX
"""What every benchmark score's MLflow key starts with: ``eval/<task>/<metric>``."""
STDERR_SUFFIX = "_stderr"
"""lmms-eval's standard error of a metric (``acc_stderr``): never a column of its own."""


@dataclass(frozen=True)
class Benchmark:
    """One column of the table: one lmms-eval task's metric."""

    task: str
    """lmms-eval task name (``mme``, ``chartqa``, ``vlsa_synthetic_vqa``)."""
    metric: str
    """The metric shown, as the task file names it (the paper's number for the paper's benchmarks)."""
    label: str
    """Column heading: the paper's label (``MME-P`` for its MME^P), else the task name."""
    ability: Ability
    """The group the column sits in (module docstring)."""
    higher_is_better: bool | None = True
    """Direction of a better score; ``None`` when unknown (a task not in :data:`BENCHMARKS`)."""

    @property
    def key(self) -> str:
        """The MLflow metric key: ``eval/<task>/<metric>``."""
        return f"{EVAL_PREFIX}{self.task}/{self.metric}"


BENCHMARKS: tuple[Benchmark, ...] = (
    # Table 3, perception (§4.3): chartqa's relaxed accuracy, docvqa's ANLS, MME's perception sum.
    Benchmark("chartqa", "relaxed_overall", "ChartQA", "perception"),
    Benchmark("docvqa_val", "anls", "DocVQA", "perception"),
    Benchmark("mme", "mme_perception_score", "MME-P", "perception"),
    # Table 3, cognition.
    Benchmark("mme", "mme_cognition_score", "MME-C", "cognition"),
    # Table 3, both perception and cognition.
    Benchmark("ai2d", "exact_match", "AI2D", "both"),
    Benchmark("scienceqa_img", "exact_match", "SQA-I", "both"),
    Benchmark("scienceqa", "exact_match", "SQA", "both"),
    Benchmark("vizwiz_vqa_val", "exact_match", "VizWiz", "both"),
    # Table 1 (academic VQA and captioning; ST-VQA has no local score in lmms-eval, only a submission file).
    Benchmark("vqav2_val", "exact_match", "VQAv2", "general"),
    Benchmark("gqa", "exact_match", "GQA", "general"),
    Benchmark("coco2017_cap_val", "coco_CIDEr", "COCO", "general"),
    Benchmark("textcaps_val", "textcaps_CIDEr", "TextC", "general"),
    Benchmark("textvqa_val", "exact_match", "TextVQA", "general"),
    # Table 2 (MLLM benchmarks; its MME is MME-P + MME-C, above). POPE: the F1 score, as LLaVA reports it.
    Benchmark("pope", "pope_f1_score", "POPE", "general"),
    Benchmark("mmbench_en_dev", "gpt_eval_score", "MMB", "general"),
    Benchmark("mmbench_cn_dev", "gpt_eval_score", "MMB-CN", "general"),
    Benchmark("seedbench", "seed_image", "SEED", "general"),
    Benchmark("llava_in_the_wild", "gpt_eval_llava_all", "LLaVA-W", "general"),
    Benchmark("mmvet", "gpt_eval_score", "MM-Vet", "general"),
    # The local tasks built from the bundled synthetic data (lmms/tasks/vlsa_synthetic/*.yaml).
    Benchmark("vlsa_synthetic_vqa", "exact_match", "synthetic VQA", "local"),
    Benchmark("vlsa_synthetic_mc", "acc", "synthetic MC", "local"),
    Benchmark("vlsa_synthetic_caption", "cider", "synthetic caption", "local"),
)
"""The known benchmarks, in the table's order: grouped as :data:`ABILITIES`, each group in its table's order."""


def split_eval_key(key: str) -> tuple[str, str] | None:
    """``(task, metric)`` of an ``eval/<task>/<metric>`` key (the metric may hold ``/``); ``None`` for any other
    key."""
    if not key.startswith(EVAL_PREFIX):
        return None
    task, _, metric = key.removeprefix(EVAL_PREFIX).partition("/")
    return (task, metric) if task and metric else None


def columns(keys: Iterable[str]) -> tuple[Benchmark, ...]:
    """The table's columns for the ``eval/`` metric keys that some run logged, in :data:`ABILITIES` order.

    A known task (one of :data:`BENCHMARKS`) logged under any metric brings each of its benchmarks' columns (a
    run that lacks the main metric then shows it as missing); every other task brings one column, group
    ``other``, with its first metric by name that is not a standard error (all of them if only those)."""
    logged: dict[str, set[str]] = {}
    for key in keys:
        parts = split_eval_key(key)
        if parts is not None:
            logged.setdefault(parts[0], set()).add(parts[1])
    known = [b for b in BENCHMARKS if b.task in logged]
    known_tasks = {b.task for b in BENCHMARKS}
    unknown = []
    for task in sorted(set(logged) - known_tasks):
        metrics = sorted(logged[task])
        metric = next((m for m in metrics if not m.endswith(STDERR_SUFFIX)), metrics[0])
        unknown.append(Benchmark(task, metric, task, "other", higher_is_better=None))
    ordered = [*known, *unknown]
    return tuple(sorted(ordered, key=lambda b: ABILITIES.index(b.ability)))


__all__ = [
    "ABILITIES",
    "ABILITY_TITLES",
    "BENCHMARKS",
    "EVAL_PREFIX",
    "Ability",
    "Benchmark",
    "columns",
    "split_eval_key",
]
