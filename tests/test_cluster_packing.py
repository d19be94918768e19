"""Ray's own autoscaler packing, run against the shipped cluster.yaml: which node types a job launches.

The node types' CPU/GPU/memory come from Ray's AWS provider (``fillout_available_node_types_resources``), which
asks EC2 ``DescribeInstanceTypes``; here EC2 is the moto server (real AWS instance-type data, on loopback). The
demands are what ffr's generation actors and Train workers request (ffr.cluster.resources, with the environment
cluster.yaml's start commands export), and the packing is ``resource_demand_scheduler.get_nodes_for`` with
the autoscaler's default utilization scorer. This test is the guard against regressions in cluster.yaml.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ffr.cluster.resources import custom_resources

REPO = Path(__file__).resolve().parents[1]
# What cluster.yaml exports before `ray start` on every node (and so what job drivers and trials see).
CLUSTER_ENV = {"FFR_CLUSTER_RESOURCES": "generate_gpu,train_gpu"}


@pytest.fixture(scope="module")
def node_types(s3_endpoint) -> dict:
    """cluster.yaml's node types with the resources Ray's AWS provider detects for them."""
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    filled = AWSNodeProvider.fillout_available_node_types_resources(copy.deepcopy(config))
    return {"config": config, "types": filled["available_node_types"]}


def _launch(node_types: dict, demands: list[dict]) -> dict[str, int]:
    """Node types (and counts) the autoscaler adds to an empty cluster for ``demands``."""
    from functools import partial

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    config = node_types["config"]
    # As ResourceDemandScheduler.get_nodes_to_launch binds it: no node type has recently failed to launch.
    scorer = partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    to_add, unfulfilled = get_nodes_for(node_types["types"], {}, config["head_node_type"], config["max_workers"],
                                        copy.deepcopy(demands), scorer)
    assert unfulfilled == [], unfulfilled
    return dict(to_add)


def _generation_actor(environ: dict) -> dict:
    # pipelines/job.py: num_gpus=1, num_cpus=1 per actor (configs/generate-*.yaml on a cluster), plus the custom
    # resource ffr.cluster.resources adds where the cluster declares it.
    return {"CPU": 1, "GPU": 1, **custom_resources("generate", 1, environ=environ)}


def _train_worker(environ: dict) -> dict:
    # ffr/training/ray_train.py: resources_per_worker with use_gpu=true, cpus_per_worker=1.
    return {"CPU": 1, "GPU": 1, **custom_resources("train", 1, environ=environ)}


def test_aws_detected_resources_match_the_instance_types(node_types):
    types = node_types["types"]
    assert types["gpu-generate"]["resources"]["GPU"] == 1 and types["gpu-generate"]["resources"]["CPU"] == 4
    assert types["gpu-generate"]["resources"]["generate_gpu"] == 1
    assert types["gpu-train"]["resources"]["GPU"] == 4 and types["gpu-train"]["resources"]["train_gpu"] == 4
    assert types["cpu-worker"]["resources"]["CPU"] == 4 and "GPU" not in types["cpu-worker"]["resources"]
    assert types["head"]["resources"]["CPU"] == 0


def test_eight_generation_actors_launch_eight_generation_nodes(node_types):
    assert _launch(node_types, [_generation_actor(CLUSTER_ENV)] * 8) == {"gpu-generate": 8}


def test_two_training_workers_launch_one_training_node(node_types):
    assert _launch(node_types, [_train_worker(CLUSTER_ENV)] * 2) == {"gpu-train": 1}


def test_a_full_sweep_of_eight_workers_fills_both_training_nodes(node_types):
    assert _launch(node_types, [_train_worker(CLUSTER_ENV)] * 8) == {"gpu-train": 2}


def test_cpu_only_work_launches_the_cpu_worker_type(node_types):
    # Tune trial drivers and other CPU-only tasks: 1 CPU each.
    assert _launch(node_types, [{"CPU": 1}] * 6) == {"cpu-worker": 2}


def test_without_custom_resources_generation_would_land_on_training_nodes(node_types):
    """Why the custom resources exist: plain GPU demands are packed onto the 4-GPU training type."""
    assert _generation_actor({}) == {"CPU": 1, "GPU": 1}
    plain = copy.deepcopy(node_types)
    for node_type in plain["types"].values():
        for name in ("generate_gpu", "train_gpu"):
            node_type["resources"].pop(name, None)
    assert _launch(plain, [_generation_actor({})] * 8) == {"gpu-train": 2}


def test_custom_resources_only_where_the_cluster_declares_them():
    from ffr.errors import FFRError

    assert custom_resources("generate", 1, environ={}) == {}  # laptop, local test cluster: plain GPUs
    assert custom_resources("generate", 0, environ=CLUSTER_ENV) == {}  # CPU-only generation
    assert custom_resources("train", 1, environ=CLUSTER_ENV) == {"train_gpu": 1.0}
    assert custom_resources("generate", 1, {"my_gpu": 2}, environ=CLUSTER_ENV) == {"my_gpu": 2.0}
    assert custom_resources("generate", 1, {}, environ=CLUSTER_ENV) == {}  # explicitly off
    with pytest.raises(FFRError, match="ray.resources"):
        custom_resources("generate", 1, {"generate_gpu": -1})
