"""The accelerator table: Ray's type strings, overrides from the experiment file, Ray resources, cost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlsa_platform.cluster import (
    ANY_GPU,
    BUILTIN,
    CPU,
    AcceleratorTable,
    cost_per_hour,
    gpu_hours,
    label_selector,
    node_resources,
    ray_resources,
)
from vlsa_platform.cluster.accelerators import ACCELERATOR_LABEL, RESOURCE_PREFIX
from vlsa_platform.config.errors import ConfigError
from vlsa_platform.config.schema import ClusterConfig


def test_builtin_classes_use_rays_accelerator_type_strings():
    accelerators = pytest.importorskip("ray.util.accelerators.accelerators")
    expected = {
        "A10G": accelerators.NVIDIA_TESLA_A10G,
        "L4": accelerators.NVIDIA_L4,
        "A100": accelerators.NVIDIA_A100,
        "A100-40G": accelerators.NVIDIA_A100_40G,
        "A100-80G": accelerators.NVIDIA_A100_80G,
        "H100": accelerators.NVIDIA_H100,
        "H200": accelerators.NVIDIA_H200,
    }
    assert {name: c.ray_accelerator_type for name, c in BUILTIN.items()} == expected
    assert all(name == c.ray_accelerator_type for name, c in BUILTIN.items())


def test_resource_prefix_and_label_are_rays():
    ray_utils = pytest.importorskip("ray._common.utils")
    raylet = pytest.importorskip("ray._raylet")
    assert ray_utils.RESOURCE_CONSTRAINT_PREFIX == RESOURCE_PREFIX
    assert raylet.RAY_NODE_ACCELERATOR_TYPE_KEY == ACCELERATOR_LABEL


def test_table_values_are_sane():
    for c in BUILTIN.values():
        assert c.is_gpu and c.memory_gib and c.bf16_tflops and c.hourly_usd
    assert BUILTIN["A10G"].memory_gib < BUILTIN["A100-40G"].memory_gib < BUILTIN["H100"].memory_gib
    assert BUILTIN["H100"].memory_gib < BUILTIN["A100-80G"].memory_gib < BUILTIN["H200"].memory_gib
    assert BUILTIN["A100"].memory_gib == BUILTIN["A100-40G"].memory_gib  # Ray's "A100" may be either size
    assert BUILTIN["H100"].bf16_tflops == BUILTIN["H200"].bf16_tflops > BUILTIN["A100-80G"].bf16_tflops
    assert not CPU.is_gpu and not ANY_GPU.is_gpu and CPU.memory_gib is None


def test_overrides_replace_fields_and_add_classes():
    cluster = ClusterConfig.model_validate(
        {
            "accelerators": {
                "A10G": {"hourly_usd": 0.5},
                "RTX-PRO-6000": {"memory_gb": 96, "bf16_tflops": 500, "hourly_usd": 3.0},
            }
        }
    )
    table = AcceleratorTable.from_config(cluster)
    a10g = table["A10G"]
    assert (a10g.hourly_usd, a10g.memory_gib, a10g.bf16_tflops) == (0.5, BUILTIN["A10G"].memory_gib, 125.0)
    added = table.lookup("RTX-PRO-6000")
    assert (added.memory_gib, added.ray_accelerator_type) == (96.0, "RTX-PRO-6000")
    assert BUILTIN["A10G"].hourly_usd != 0.5  # the built-in table is untouched
    assert AcceleratorTable.from_config(None)["A10G"] == BUILTIN["A10G"]


def test_new_class_needs_all_three_fields():
    cluster = ClusterConfig.model_validate({"accelerators": {"B200": {"memory_gb": 180}}})
    with pytest.raises(ConfigError) as info:
        AcceleratorTable.from_config(cluster)
    message = str(info.value)
    assert message.startswith("cluster.accelerators.B200: not a built-in accelerator class")
    assert "missing: bf16_tflops, hourly_usd" in message


def test_unknown_type_names_the_field_and_lists_the_known_classes():
    cluster = ClusterConfig.model_validate(
        {"accelerators": {"MI300X": {"memory_gb": 192, "bf16_tflops": 1307, "hourly_usd": 4}}}
    )
    with pytest.raises(ConfigError) as info:
        AcceleratorTable.from_config(cluster).lookup("V100", "stages.s1.placement.accelerator_type")
    message = str(info.value)
    assert message.startswith("stages.s1.placement.accelerator_type: unknown accelerator type 'V100'")
    assert "A10G, L4, A100, A100-40G, A100-80G, H100, H200, MI300X" in message


def test_ray_resources_labels_and_cost():
    h100 = BUILTIN["H100"]
    assert ray_resources(h100) == {"accelerator_type:H100": 0.001}
    assert node_resources(BUILTIN["A100-80G"], 8) == {"accelerator_type:A100-80G": 8.0}
    assert label_selector(h100) == {"ray.io/accelerator-type": "H100"}
    assert ray_resources(CPU) == {} and label_selector(ANY_GPU) is None
    assert cost_per_hour(h100, 8) == pytest.approx(8 * h100.hourly_usd)
    assert cost_per_hour(CPU, 4) is None
    assert gpu_hours(h100, 8, 1800) == 4.0 and gpu_hours(CPU, 8, 1800) == 0.0


def test_scaling_config_asks_for_the_same_resource():
    """What ``ResolvedPlacement.scaling_config_kwargs`` gives Ray Train asks for ``ray_resources``."""
    train = pytest.importorskip("ray.train")
    from vlsa_platform.cluster import derive_placement
    from vlsa_platform.config.schema import Placement

    placement = Placement(accelerator_type="A10G", num_workers=2, global_batch=8)
    resolved = derive_placement(placement, BUILTIN["A10G"])
    config = train.ScalingConfig(**resolved.scaling_config_kwargs())
    assert config._resources_per_worker_not_none == {"GPU": 1, **ray_resources(BUILTIN["A10G"])}
    # simulated on CPU workers: the same custom resource, no GPU
    simulated = derive_placement(placement.model_copy(update={"use_gpu": False}), BUILTIN["A10G"])
    config = train.ScalingConfig(**simulated.scaling_config_kwargs())
    assert config._resources_per_worker_not_none == {"CPU": 1, **ray_resources(BUILTIN["A10G"])}


def test_importing_cluster_loads_no_ray_deepspeed_or_torch():
    code = (
        "import sys, vlsa_platform.cluster\n"
        "print(sorted(m for m in ('ray', 'deepspeed', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_SIMULATION = """
import ray
from vlsa_platform.cluster import BUILTIN, node_resources, ray_resources

ray.init(num_cpus=2, resources=node_resources(BUILTIN["A10G"], 2), include_dashboard=False, log_to_driver=False)

@ray.remote(num_cpus=0)
def where():
    return sorted(k for k in ray.get_runtime_context().get_assigned_resources() if k.startswith("accelerator_type:"))

assert ray.get(where.options(resources=ray_resources(BUILTIN["A10G"])).remote(), timeout=120) == [
    "accelerator_type:A10G"
]
h100 = ray.util.placement_group([{"CPU": 1, **ray_resources(BUILTIN["H100"])}])
assert not h100.wait(3)  # no H100 on this cluster: the request waits
ray.util.remove_placement_group(h100)
ray.shutdown()
print("ok")
"""


@pytest.mark.slow
def test_local_cluster_simulates_a_class_with_custom_resources():
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-c", _SIMULATION], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1:] == ["ok"], done.stderr[-3000:]
