"""The §4 names and ``flatten_params`` (no MLflow needed)."""

import math

from vlsa_platform.config import load_experiment
from vlsa_platform.tracking import flatten_params, names
from vlsa_platform.tracking.names import MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, clean_key, param_value

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_design_names():
    assert names.METRICS == (
        "loss/total",
        "loss/llm",
        "loss/rec",
        "loss/vq",
        "loss/px",
        "lr",
        "stage",
        "throughput/samples_per_s",
        "val/loss_llm",
        "val/loss_rec",
        "cost/gpu_hours",
        "val/exact_match",
        "val/vq_accuracy",
        "val/px_accuracy",
        "val/psnr",
    )
    spelled = (names.LOSS_TOTAL, names.LOSS_LLM, names.LOSS_REC, names.LOSS_VQ, names.LOSS_PX, names.LR)
    spelled += (names.STAGE, names.THROUGHPUT, names.VAL_LOSS_LLM, names.VAL_LOSS_REC, names.COST_GPU_HOURS)
    spelled += (names.VAL_EXACT_MATCH, names.VAL_VQ_ACCURACY, names.VAL_PX_ACCURACY, names.VAL_PSNR)
    assert spelled == names.METRICS
    assert (names.TAG_VARIANT, names.TAG_TRIAL_ID, names.TAG_SCALE, names.TAG_GIT_COMMIT) == (
        "vlsa.variant",
        "vlsa.trial_id",
        "vlsa.scale",
        "vlsa.git_commit",
    )
    assert names.ARTIFACT_RESOLVED_CONFIG == "config/resolved.yaml"
    assert names.deepspeed_artifact("stage2") == "deepspeed/stage2.json"
    assert names.recon_artifact(100) == "recon/step_000100.png"
    assert names.recon_artifact(7, stage="stage1") == "recon/stage1/step_000007.png"
    assert names.skipped_metric("missing image") == "data/skipped/missing_image"
    assert names.skipped_metric("Bad-Record!") == "data/skipped/bad_record"
    assert names.run_tags(scale="tiny", variant="sa", git_commit=None) == {
        "vlsa.scale": "tiny",
        "vlsa.variant": "sa",
    }


def test_flatten_nested_lists_and_scalars():
    flat = flatten_params(
        {
            "stages": {"stage2": {"loss": {"rec_weight": 0.5}, "trainable": ["llm", "decoder"]}},
            "seed": 0,
            "flag": True,
            "none": None,
            "empty": {},
            "text": "hello",
            "inf": math.inf,
            "mixed": [{"a": 1}, 2],
        }
    )
    assert flat == {
        "stages.stage2.loss.rec_weight": "0.5",
        "stages.stage2.trainable": '["llm","decoder"]',
        "seed": "0",
        "flag": "true",
        "none": "null",
        "empty": "{}",
        "text": "hello",
        "inf": "inf",
        "mixed": '[{"a":1},2]',
    }


def test_flatten_respects_mlflow_limits():
    long_value = "x" * (MAX_PARAM_VALUE_LENGTH + 500)
    out = param_value(long_value)
    assert len(out) == MAX_PARAM_VALUE_LENGTH
    # 500 characters over, plus room for the 24-character marker itself.
    assert out.startswith("xxx") and out.endswith("x...[truncated 524 chars]")
    assert param_value("y" * MAX_PARAM_VALUE_LENGTH) == "y" * MAX_PARAM_VALUE_LENGTH
    long_list = list(range(3000))
    assert len(flatten_params({"ids": long_list})["ids"]) <= MAX_PARAM_VALUE_LENGTH

    # Keys: MLflow's alphabet, no path tricks, at most 250 characters and still distinct.
    assert clean_key("data.mixtures.a+b") == "data.mixtures.a_b"
    assert clean_key("cluster.accelerators.A100-80G.hourly_usd") == "cluster.accelerators.A100-80G.hourly_usd"
    assert clean_key("/abs//x/") == "_/abs/_/x/_"
    assert clean_key("../up") == "_/up"
    a, b = clean_key("k" * 300 + "a"), clean_key("k" * 300 + "b")
    assert len(a) == len(b) == MAX_KEY_LENGTH and a != b


def test_flatten_the_paper_recipe():
    flat = flatten_params(load_experiment(REPO / "experiments" / "vlsa_paper.yaml").resolved())
    assert "stages.stage2.loss.rec_weight" in flat
    assert all(isinstance(v, str) and len(v) <= MAX_PARAM_VALUE_LENGTH for v in flat.values())
    assert all(clean_key(k) == k for k in flat)


def test_gpu_hours_meter_uses_the_accelerator_table():
    from vlsa_platform.cluster import BUILTIN, CPU
    from vlsa_platform.tracking import GpuHoursMeter

    now = [100.0]
    meter = GpuHoursMeter(BUILTIN["H100"], num_workers=8, already=0.5, clock=lambda: now[0])
    now[0] += 1800.0
    assert meter.metrics() == {"cost/gpu_hours": 0.5 + 8 * 0.5}
    assert GpuHoursMeter(CPU, num_workers=2, clock=lambda: now[0]).value() == 0.0
