"""Fixtures of the validation-metric tests: the tiny recipe, its model (random weights) and held-out samples of
the bundled synthetic validation split with cognition turns. (``evaluate`` through a DeepSpeed engine is tested
in ``tests/train/test_validation_metrics.py``: it needs that package's process group, which DeepSpeed caches, so
a second group made and destroyed here would break the first.)"""

from __future__ import annotations

import copy

import pytest
import torch

from vlsa_platform.data.dataset import VLSADataset, collate
from vlsa_platform.data.records import dataset_location, read_records
from vlsa_platform.train.build import build_model, build_tokenizer

from .helpers import cognition_everywhere, tiny_experiment


@pytest.fixture(scope="package")
def experiment():
    return tiny_experiment()


@pytest.fixture(scope="package")
def tokenizer(experiment):
    return build_tokenizer(experiment)


@pytest.fixture(scope="package")
def base_model(experiment):
    return build_model(experiment).eval()


@pytest.fixture
def model(base_model):
    """A copy of the tiny model a test may change."""
    return copy.deepcopy(base_model)


@pytest.fixture(scope="package")
def held_out_batch(experiment, tokenizer, base_model):
    """A collated batch of the synthetic validation split's first records (images, a text-only sample, multi-turn
    conversations), each image sample with a VQ and a pixel question; and the dataset it came from."""
    validation = experiment.data.validation
    path, image_root = dataset_location(experiment.data.datasets[validation.dataset])
    records, _ = read_records(path, dataset=validation.dataset)
    text_only = next(r for r in records if r.image is None)
    chosen = [*records[:3], text_only]
    dataset = VLSADataset(
        chosen,
        tokenizer=tokenizer,
        config=base_model.config,
        image_roots={validation.dataset: image_root},
        max_length=experiment.data.max_length,
        cognition=cognition_everywhere(experiment.seed),
    )
    samples = [dataset[i] for i in range(len(dataset))]
    return collate(samples, tokenizer.pad_token_id), samples


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Keep the CPU light (the machine's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
