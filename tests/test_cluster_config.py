"""cluster.yaml and cluster-local.yaml pass Ray's own validation and keep the security defaults.

Each security rule is also shown to fire on a config that breaks it, so none of these checks can pass vacuously.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

from ffr.cluster.check import check_cluster_config, main, ray_schema_errors, security_problems
from ffr.errors import FFRError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-local.yaml"]


def _load(name: str) -> tuple[dict, str]:
    text = (REPO / name).read_text()
    return yaml.safe_load(text), text


@pytest.mark.parametrize("name", CONFIGS)
def test_passes_rays_validation_and_our_rules(name):
    config = check_cluster_config(REPO / name)
    assert config["cluster_name"].startswith("ffr")


def test_cli_checks_both_files(capsys):
    assert main([str(REPO / n) for n in CONFIGS]) == 0
    assert capsys.readouterr().out.count(": ok") == 2


@pytest.mark.parametrize("name", CONFIGS)
def test_a_misspelled_key_fails_with_a_clear_error(name, tmp_path):
    config, _ = _load(name)
    config["setup_comands"] = ["echo typo"]  # one letter short of setup_commands
    bad = tmp_path / name
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(FFRError) as e:
        check_cluster_config(bad)
    message = str(e.value)
    assert "\n" not in message and str(bad) in message
    assert "'setup_comands' was unexpected" in message


def test_a_bad_node_type_key_names_where_it_is():
    config, _ = _load("cluster.yaml")
    config["available_node_types"]["gpu-generate"]["max_worker"] = 3
    with pytest.raises(FFRError, match=r"'max_worker' was unexpected.*available_node_types.gpu-generate"):
        ray_schema_errors(config)


def test_head_type_must_exist():
    config, _ = _load("cluster.yaml")
    config["head_node_type"] = "no-such-type"
    with pytest.raises(FFRError, match="head_node_type"):
        ray_schema_errors(config)


def test_aws_layout_head_does_no_work_and_workers_autoscale():
    config, _ = _load("cluster.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    assert len(workers) >= 2
    for t in workers.values():
        assert t["min_workers"] < t["max_workers"] <= config["max_workers"]
        assert re.match(r"(g|p)\d", t["node_config"]["InstanceType"])  # GPU families
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in workers.values())
    assert any("InstanceMarketOptions" not in t["node_config"] for t in workers.values())  # on-demand training
    assert any(o.startswith("--shm-size") for o in config["docker"]["run_options"])


def test_image_tag_matches_the_pinned_ray():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = next(re.search(r"==([\d.]+)", d).group(1) for d in pyproject["project"]["dependencies"]
                  if d.startswith("ray["))
    assert pinned == ray.__version__
    config, _ = _load("cluster.yaml")
    assert config["docker"]["image"] == f"rayproject/ray:{pinned}-py311-gpu"


@pytest.mark.parametrize("name", CONFIGS)
def test_security_properties_hold(name):
    config, text = _load(name)
    assert security_problems(config, text) == []
    head = "\n".join(config["head_start_ray_commands"])
    commands = yaml.safe_dump({k: v for k, v in config.items() if "commands" in k})
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in commands
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in "\n".join(config["worker_start_ray_commands"])
    assert "disabled" not in text
    assert not re.search(r"AKIA|ASIA|aws_secret|aws_access_key|aws_session", text, re.IGNORECASE)
    assert "~/.ray/auth_token" in config["file_mounts"]  # every node gets the token
    assert "mlflow_server" in head  # MLflow started on the head, bound by ffr.cluster.mlflow_server's rules


def test_every_aws_node_type_has_an_instance_profile():
    config, _ = _load("cluster.yaml")
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")


def _broken(mutate) -> list[str]:
    config, text = _load("cluster.yaml")
    mutate(config, text)
    return security_problems(config, yaml.safe_dump(config))


@pytest.mark.parametrize("mutate, expected", [
    (lambda c, t: c["head_start_ray_commands"].__setitem__(
        1, c["head_start_ray_commands"][1].replace("127.0.0.1", "0.0.0.0")), "--dashboard-host=127.0.0.1"),
    (lambda c, t: c["worker_start_ray_commands"].__setitem__(
        1, c["worker_start_ray_commands"][1].replace("RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")),
     "RAY_AUTH_MODE=disabled"),
    (lambda c, t: c["head_start_ray_commands"].__setitem__(
        1, c["head_start_ray_commands"][1].replace("export RAY_AUTH_MODE=token;", "")), "head_start_ray_commands"),
    (lambda c, t: c["available_node_types"]["head"].__setitem__("resources", {}), "CPU: 0"),
    (lambda c, t: c["available_node_types"]["gpu-train"]["node_config"].pop("IamInstanceProfile"), "gpu-train"),
    (lambda c, t: c.__setitem__("setup_commands", ["export AWS_SECRET_ACCESS_KEY=abc"]), "credentials"),
    (lambda c, t: c.__setitem__("setup_commands", ["echo AKIAABCDEFGHIJKLMNOP"]), "credentials"),
    (lambda c, t: c["provider"]["security_group"].__setitem__("IpPermissions", [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
     "8265-8265 is open to the internet"),
    (lambda c, t: c["head_start_ray_commands"].append("mlflow server --host 0.0.0.0"), "every interface"),
    (lambda c, t: c["docker"].__setitem__("image", "rayproject/ray:2.50.0-py311-gpu"), "does not match"),
])
def test_each_security_rule_fires_on_a_config_that_breaks_it(mutate, expected):
    problems = _broken(mutate)
    assert any(expected in p for p in problems), problems


def test_the_private_address_command_in_cluster_yaml_prints_a_private_ip():
    import ipaddress
    import subprocess
    import sys

    config, _ = _load("cluster.yaml")
    assert "python -m ffr.cluster.network private-address" in "\n".join(config["head_start_ray_commands"])
    out = subprocess.run([sys.executable, "-m", "ffr.cluster.network", "private-address"], capture_output=True,
                         text=True, check=True).stdout.strip()
    ip = ipaddress.ip_address(out)
    assert (ip.is_private or ip.is_loopback) and not ip.is_unspecified
