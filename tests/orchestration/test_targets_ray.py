"""Filling the frozen-target cache with Ray Data gives the entries an in-process fill gives, computed once."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.test_targets import TINY, write_images
from vlsa_platform.data.targets import TargetCache, file_digest
from vlsa_platform.orchestration.targets import fill_cache

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs (token authentication as Ray sets it up), or the one already running."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    progress, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    yield ray
    ctx.enable_progress_bars = progress
    if started:
        ray.shutdown()


# Ray start-up plus two actors importing torch/diffusers: 23-60 s of wall time on a shared 2-core machine.
@pytest.mark.slow
# Ray Data deep-copies its DataContext, whose deprecated fields warn on every copy (Ray's, not ours).
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_ray_fill_matches_in_process_fill(tmp_path, local_ray):
    images = tmp_path / "images"
    names = write_images(images, 4, seed=3)
    records = [{"image": n} for n in names]

    ray_root, local_root = str(tmp_path / "ray"), str(tmp_path / "local")
    report = fill_cache(records, str(images), ray_root, TINY, use_ray=True, concurrency=2, batch_size=2)
    assert (report.images, report.computed, report.reused, report.failed) == (4, 8, 0, [])
    assert report.encoder_calls == {"vq": 4, "vae": 4}
    fill_cache(records, str(images), local_root, TINY)

    # Same keys: the actors (other processes) built models with the same fingerprints, and the same values.
    ray_cache, local_cache = TargetCache(ray_root), TargetCache(local_root)
    for kind in ("vq", "vae"):
        assert ray_cache.keys(kind) == local_cache.keys(kind) and len(ray_cache.keys(kind)) == 4
    frozen = TINY()
    for name in names:
        digest = file_digest(images / name)
        vq_key, vae_key = frozen.key("vq", digest), frozen.key("vae", digest)
        np.testing.assert_array_equal(ray_cache.get(vq_key), local_cache.get(vq_key))
        # Stored as float16: a float32 difference in the last bits (other threads) may round one step apart.
        np.testing.assert_allclose(ray_cache.get(vae_key), local_cache.get(vae_key), rtol=2**-10, atol=1e-5)

    # A later trial (here in this process) finds every entry the actors wrote: nothing is computed again.
    again = fill_cache(records, str(images), ray_root, TINY)
    assert (again.computed, again.reused, again.encoder_calls) == (0, 8, {})
