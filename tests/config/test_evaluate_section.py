"""The ``evaluate`` section: where it evaluates, what a benchmark-score sweep metric needs, what ``--scale tiny``
makes of it, and where ASHA may compare trials on such a metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsa_platform.config import ConfigError, load_experiment
from vlsa_platform.config.evaluate_section import eval_metric_task
from vlsa_platform.config.loader import TINY_EVAL_LIMIT, TINY_EVAL_METRIC, TINY_EVAL_TASKS

from .helpers import MINIMAL, write

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
EVALUATE = """
evaluate:
  tasks: [mme, ai2d]
"""
SWEEP = """
sweep:
  search_space:
    loss.rec_weight: {grid: [0.1, 1.0]}
  metric: eval/mme/mme_perception_score
  mode: max
  scheduler: {kind: asha}
"""


def load(tmp_path: Path, text: str, **kwargs):
    write(tmp_path, "x.yaml", MINIMAL + text)
    return load_experiment(tmp_path / "x.yaml", **kwargs)


def error(tmp_path: Path, text: str, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    return str(info.value)


def test_it_evaluates_after_the_last_stage_unless_told(tmp_path):
    config = load(tmp_path, EVALUATE)
    assert config.evaluate.points(list(config.stages)) == ["s2"]
    config = load(tmp_path, EVALUATE + "  after: [s2, s1]\n")
    assert config.evaluate.points(list(config.stages)) == ["s1", "s2"]  # in the run's order
    assert not config.evaluate.gpu()
    assert load(tmp_path, EVALUATE + "  accelerator_type: H100\n").evaluate.gpu()


def test_an_unknown_stage_or_an_empty_task_list_is_refused_at_its_line(tmp_path):
    message = error(tmp_path, EVALUATE + "  after: [s1, s3]\n")
    assert "evaluate.after.1" in message and "no stage named 's3'" in message
    assert "evaluate.tasks" in error(tmp_path, "evaluate:\n  tasks: []\n")
    assert "evaluate.tasks.0" in error(tmp_path, "evaluate:\n  tasks: ['mme; rm -rf']\n")


def test_a_benchmark_metric_names_a_task_of_the_section(tmp_path):
    assert eval_metric_task("eval/mme/mme_perception_score") == "mme"
    assert eval_metric_task("eval/mme") is None and eval_metric_task("val/loss_llm") is None
    message = error(tmp_path, SWEEP)
    assert "sweep.metric" in message and "needs an evaluate section" in message
    message = error(tmp_path, SWEEP + "evaluate:\n  tasks: [ai2d]\n")
    assert "mme is not among evaluate.tasks (ai2d)" in message
    assert "unknown metric 'eval/'" in error(
        tmp_path, SWEEP.replace("eval/mme/mme_perception_score", "eval/")
    )


def test_asha_on_a_benchmark_score_counts_the_evaluations(tmp_path):
    config = load(tmp_path, SWEEP + EVALUATE + "  after: [s1, s2]\n")
    assert config.sweep.scheduler.rungs.from_stage == "s1"  # the key acts from s1; s1 is evaluated
    message = error(
        tmp_path,
        SWEEP.replace("{kind: asha}", "{kind: asha, rungs: {from_stage: s2}}") + EVALUATE + "  after: [s1]\n",
    )
    assert "no evaluation point where ASHA may compare trials" in message and "evaluate.after (s1)" in message


def test_a_variant_evaluates_after_the_listed_stages_it_has(tmp_path):
    ablation = """
ablation:
  variants:
    both: {}
    first: {stages: [s1]}
"""
    config = load(tmp_path, EVALUATE + "  after: [s1, s2]\n" + ablation)
    assert config.variant("both").evaluate.after == ["s1", "s2"]
    assert config.variant("first").evaluate.after == ["s1"]
    message = error(tmp_path, EVALUATE + "  after: [s2]\n" + ablation)
    assert "ablation.variants.first.stages" in message and "would never be evaluated" in message


def test_tiny_scale_scores_the_local_tasks_on_a_cpu(tmp_path):
    config = load(
        tmp_path,
        SWEEP + EVALUATE + "  accelerator_type: H100\n  limit: 500\n",
        scale="tiny",
    )
    assert config.evaluate.tasks == list(TINY_EVAL_TASKS)
    assert config.evaluate.limit == TINY_EVAL_LIMIT and not config.evaluate.gpu()
    assert config.sweep.metric == TINY_EVAL_METRIC and config.sweep.mode == "max"


@pytest.mark.parametrize("scale", ["paper", "tiny"])
def test_the_shipped_files_evaluate_as_documented(scale):
    ablation = load_experiment(EXPERIMENTS / "ablation.yaml", scale=scale)
    assert ablation.evaluate is not None
    for name in ablation.ablation.variants:
        variant = ablation.variant(name)
        assert variant.evaluate.points(list(variant.stages)) == ["stage3"]
    sweep = load_experiment(EXPERIMENTS / "loss_ratio_mme_sweep.yaml", scale=scale)
    assert sweep.evaluate.points(list(sweep.stages)) == ["stage2", "stage3"]
    assert eval_metric_task(sweep.sweep.metric) in sweep.evaluate.tasks
    assert sweep.sweep.scheduler.rungs.from_stage == "stage2"
