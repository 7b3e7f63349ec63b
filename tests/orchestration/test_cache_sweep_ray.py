"""A 4-trial tiny sweep encodes each image once: the submission fills the frozen-target cache with Ray Data
before its first trial, and no trial's frozen encoders see an image again (issue 17, must-show).

``vlsa-platform submit experiments/loss_ratio_sweep.yaml --scale tiny`` end to end on an embedded local Ray
(stages of one step, as ``test_submit_ray``). Counted: the fill's encoder calls per kind (on the parent run)
plus every stage's (``data/frozen_encoder_calls/<kind>`` on each trial's run: VAE targets given as pixels, VQ
grids computed on a miss) equal the number of distinct images the experiment reads. A few minutes on 2 cores.
"""

from __future__ import annotations

import pytest

from vlsa_platform.data.targets import TargetCache
from vlsa_platform.orchestration.cache_fill import FILL_ENCODED, FILL_IMAGES
from vlsa_platform.orchestration.submission_types import RUNS_DIR
from vlsa_platform.orchestration.training import target_cache_root
from vlsa_platform.train.frozen_targets import ENCODER_CALLS_METRIC

from .test_submit_ray import client, runs_of, submit

pytest.importorskip("ray")

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

EXPERIMENT = "vlsa-loss-ratio"


def test_a_four_trial_sweep_encodes_each_image_once_per_kind(local_cluster, workdir, capsys):
    # eight records per stage: the property does not need the whole synthetic set (580 images) encoded
    few = [f"stages.{stage}.mixture.0.sampling=first:8" for stage in ("stage1", "stage2", "stage3")]
    assert submit(workdir, "loss_ratio_sweep.yaml", "data.prefill_targets=true", *few) == 0
    assert "target cache: " in capsys.readouterr().out
    (parent,), children = runs_of(workdir, EXPERIMENT)
    trials = children[parent.info.run_id]
    assert len(trials) == 4
    images = parent.data.metrics[FILL_IMAGES]
    assert images > 0
    c = client(workdir)
    # The trials' cache: under the submission's runs root (the parent run is named by the submission).
    runs_root = workdir / "storage" / RUNS_DIR / parent.info.run_name
    cache = TargetCache(target_cache_root(str(runs_root), EXPERIMENT))
    for kind in ("vq", "vae"):
        fill = parent.data.metrics[FILL_ENCODED.format(kind=kind)]
        histories = [
            c.get_metric_history(t.info.run_id, ENCODER_CALLS_METRIC.format(kind=kind)) for t in trials
        ]
        assert all(histories), f"a trial logged no {kind} encoder calls"  # one value per stage it ran
        in_trials = sum(m.value for history in histories for m in history)
        assert (fill + in_trials) / images == 1.0, f"{kind}: {fill} in the fill + {in_trials} in trials"
        assert len(cache.keys(kind)) == images  # each image's entry, computed once
