"""``results.json``'s score names from lmms-eval's results, and the refusal of unknown task names (no lmms-eval
needed: the task list is given)."""

from __future__ import annotations

from vlsa_platform.lmms.results import FAILED, FINISHED, PENDING, EvalResults, TaskOutcome, flat_scores
from vlsa_platform.lmms.run import record_failure
from vlsa_platform.lmms.task_check import unknown_tasks


def test_scores_are_task_slash_metric_without_the_none_filter_stderrs_or_non_numbers():
    lmms_results = {
        "vlsa_synthetic_vqa": {
            "alias": "vlsa_synthetic_vqa",
            "exact_match,none": 0.375,
            "exact_match_stderr,none": 0.18,
            "exact_match_stderr_clt,none": 0.17,
            "samples": 8,
        },
        "gsm8k": {
            "exact_match,strict-match": 0.5,
            "exact_match,flexible-extract": 0.625,
            "other,none": "N/A",
        },
        "vlsa_synthetic": {
            "alias": "vlsa_synthetic",
            "acc,none": 1,
            "flag,none": True,
            "nan,none": float("nan"),
        },
    }
    assert flat_scores(lmms_results) == {
        "vlsa_synthetic_vqa/exact_match": 0.375,
        "gsm8k/exact_match/strict-match": 0.5,
        "gsm8k/exact_match/flexible-extract": 0.625,
        "vlsa_synthetic/acc": 1.0,
    }


def test_results_round_trip_and_name_the_unfinished_tasks(tmp_path):
    results = EvalResults(
        export="/x/model",
        tasks={"a": TaskOutcome(FINISHED, seconds=1.0), "b": TaskOutcome(FAILED, "E: x"), "c": TaskOutcome()},
        scores={"a/acc": 0.5},
        limit=8,
    )
    results.write(tmp_path)
    assert EvalResults.read(tmp_path) == results
    assert results.failed == ["b", "c"] and results.tasks["c"].status == PENDING


def test_an_unknown_task_is_named_with_its_close_matches():
    known = ["vlsa_synthetic", "vlsa_synthetic_vqa", "vlsa_synthetic_mc", "mme", "pope"]
    assert unknown_tasks(["vlsa_synthetic_vqa", "mme"], known) is None
    message = unknown_tasks(["vlsa_synthetic_vqq", "totally_unknown", "mme"], known)
    assert message is not None and message.startswith(
        "unknown lmms-eval tasks: vlsa_synthetic_vqq (did you mean "
    )
    assert "vlsa_synthetic_vqq (did you mean vlsa_synthetic_vqa" in message
    assert "; totally_unknown —" in message  # no close match: no suggestion
    assert "mme" not in message.split(" — ")[0]


def test_a_failed_task_is_recorded_by_the_error_behind_a_retry(tmp_path):
    """lmms-eval retries ``process_results`` (tenacity): what failed is the last attempt's error."""

    class Attempt:
        failed = True

        def exception(self):
            return RuntimeError("broken on purpose")

    class RetryError(Exception):
        def __init__(self) -> None:
            super().__init__("RetryError[<Future at 0x1 state=finished raised RuntimeError>]")
            self.last_attempt = Attempt()

    assert record_failure(tmp_path, "a task", RetryError()) == "RuntimeError: broken on purpose"
    text = (tmp_path / "errors" / "a_task.txt").read_text()
    assert "RetryError" in text and "RuntimeError: broken on purpose" in text
