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

from ffr.cluster.check import (
    check_cluster_config,
    image_problems,
    main,
    placeholders,
    ray_schema_errors,
    security_problems,
    ssh_problems,
    token_warnings,
)
from ffr.errors import FFRError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-local.yaml"]
# What a user fills in before `ray up` (docs/cluster.md step 1).
FILL = {"REPLACE_ME_SSH_CIDR": "203.0.113.7/32", "REPLACE_ME_BUCKET": "ffr-example-bucket"}


def _load(name: str) -> tuple[dict, str]:
    text = (REPO / name).read_text()
    return yaml.safe_load(text), text


def _filled(name: str, directory: Path) -> Path:
    text = (REPO / name).read_text()
    for placeholder, value in FILL.items():
        text = text.replace(placeholder, value)
    path = directory / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", CONFIGS)
def test_passes_rays_validation_and_our_rules_once_filled_in(name, tmp_path):
    config = check_cluster_config(_filled(name, tmp_path))
    assert config["cluster_name"].startswith("ffr")
    assert check_cluster_config(REPO / name, allow_placeholders=True) == yaml.safe_load((REPO / name).read_text())


def test_cli_checks_both_files(capsys, tmp_path):
    assert main([str(_filled(n, tmp_path)) for n in CONFIGS]) == 0
    assert capsys.readouterr().out.count(": ok") == 2
    assert main([str(REPO / n) for n in CONFIGS]) == 2  # the shipped templates still hold placeholders
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 2 and all("placeholders left in: " in line for line in errors), err
    assert "REPLACE_ME_SSH_CIDR (line " in errors[0] and "REPLACE_ME_BUCKET (line " in errors[0]


def test_placeholders_are_found_in_values_not_comments():
    text = "# fill in the REPLACE_ME values\nbucket: s3://REPLACE_ME_BUCKET/x  # REPLACE_ME_NOT_THIS\n"
    assert placeholders(text) == ["REPLACE_ME_BUCKET (line 2)"]


def test_a_placeholder_left_in_fails_with_one_line(tmp_path):
    path = _filled("cluster.yaml", tmp_path)
    path.write_text(path.read_text().replace("Name: ffr-ray-head", "Name: REPLACE_ME_PROFILE"))
    with pytest.raises(FFRError) as e:
        check_cluster_config(path)
    assert "\n" not in str(e.value) and "REPLACE_ME_PROFILE (line " in str(e.value)


def test_every_gpu_node_type_pins_a_current_image():
    config, _ = _load("cluster.yaml")
    for name, node_type in config["available_node_types"].items():
        image = node_type["node_config"]["ImageId"]
        assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu"), name
    assert image_problems(config) == []


@pytest.mark.parametrize("image", [None, "latest_dlami", "ubuntu-22.04"])
def test_a_gpu_node_type_without_a_current_image_fails(image, tmp_path):
    config = yaml.safe_load(_filled("cluster.yaml", tmp_path).read_text())
    node_config = config["available_node_types"]["gpu-generate"]["node_config"]
    if image is None:
        node_config.pop("ImageId")
    else:
        node_config["ImageId"] = image
    path = tmp_path / "no-image.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(FFRError, match="'gpu-generate'") as e:
        check_cluster_config(path)
    assert "\n" not in str(e.value)
    if image is None:
        assert "has no ImageId" in str(e.value) and "aws ssm get-parameters" in str(e.value)


def test_ssh_must_come_from_a_declared_cidr():
    config, _ = _load("cluster.yaml")
    assert ssh_problems(config) == []
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert [r["FromPort"] for r in rules] == [22]  # SSH only; everything else is intra-group
    assert all(r["CidrIp"] not in ("0.0.0.0/0", "::/0") for rule in rules for r in rule["IpRanges"])
    del config["provider"]["security_group"]["IpPermissions"]
    assert "no SSH rule" in ssh_problems(config)[0]
    rules[0]["IpRanges"] = [{"CidrIp": "0.0.0.0/0"}]
    config["provider"]["security_group"]["IpPermissions"] = rules
    assert any("22-22 is open to the internet" in p for p in security_problems(config, yaml.safe_dump(config)))


def test_token_file_readable_by_others_is_a_warning(tmp_path):
    token = tmp_path / "auth_token"
    config = {"file_mounts": {"~/.ray/auth_token": str(token)}}
    assert "does not exist" in token_warnings(config)[0]
    token.write_text("t" * 64)
    token.chmod(0o644)
    assert "mode 644" in token_warnings(config)[0] and f"chmod 600 {token}" in token_warnings(config)[0]
    token.chmod(0o600)
    assert token_warnings(config) == []


@pytest.mark.parametrize("name", CONFIGS)
def test_a_misspelled_key_fails_with_a_clear_error(name, tmp_path):
    config = yaml.safe_load(_filled(name, tmp_path).read_text())
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
    assert set(workers) == {"cpu-worker", "gpu-generate", "gpu-train"}
    for t in workers.values():
        assert t["min_workers"] < t["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    assert not re.match(r"(g|p)\d", workers["cpu-worker"]["node_config"]["InstanceType"])
    assert types["gpu-generate"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in types["gpu-train"]["node_config"]  # on-demand training
    # Each type steers its own work: one custom resource per GPU, declared by that type only.
    assert types["gpu-generate"]["resources"] == {"generate_gpu": 1}
    assert types["gpu-train"]["resources"] == {"train_gpu": 4}
    head_start = "\n".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert head_start.count("FFR_CLUSTER_RESOURCES=generate_gpu,train_gpu") == 2


# GiB of RAM per instance type (AWS instance type pages); /dev/shm must leave most of it to the processes.
RAM_GIB = {"m6i.2xlarge": 32, "m6i.xlarge": 16, "g6.xlarge": 16, "g5.12xlarge": 192}


def test_shm_size_fits_each_node():
    config, _ = _load("cluster.yaml")
    assert not any("--shm-size" in o for o in config["docker"]["run_options"])  # never one size for all nodes
    for name, node_type in config["available_node_types"].items():
        options = (config["docker"]["head_run_options"] if name == config["head_node_type"]
                   else node_type["docker"]["worker_run_options"])
        shm = int(next(re.fullmatch(r"--shm-size=(\d+)g", o).group(1) for o in options if o.startswith("--shm")))
        ram = RAM_GIB[node_type["node_config"]["InstanceType"]]
        assert 0.3 * ram <= shm <= 0.5 * ram, (name, shm, ram)


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
        assert node_type["node_config"]["IamInstanceProfile"]["Name"] in {"ffr-ray-head", "ffr-ray-worker"}


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
        1, c["head_start_ray_commands"][1].replace("RAY_AUTH_MODE=token ", "")), "head_start_ray_commands"),
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


def test_the_mlflow_servers_s3_proxy_dependency_is_declared_and_installed():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(d.startswith("boto3") for d in pyproject["project"]["optional-dependencies"]["server"])
    config, _ = _load("cluster.yaml")
    assert any("[server]" in c for c in config["setup_commands"])
