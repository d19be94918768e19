"""Check a cluster config before ``ray up`` (which has no dry run): Ray's own schema, then our security rules.

    python -m ffr.cluster.check cluster.yaml cluster-local.yaml
    python -m ffr.cluster.check --allow-placeholders cluster.yaml   # the repository's template, before filling in

Ray's rules come from ``ray.autoscaler._private.util.prepare_config`` + ``validate_config`` (private API, hence
the exact Ray pin in pyproject.toml). Ours are the defaults docs/cluster.md promises: no ``REPLACE_ME`` left, a
current GPU image on every GPU node type, token auth on every node, dashboard on loopback, SSH only from a
declared CIDR and nothing else opened to the internet, no keys in the file, an instance profile per AWS node
type, a CPU-0 head on AWS, and a container image matching the installed Ray. A token file readable by others is
a warning (it is on the laptop, not in the file).
"""

from __future__ import annotations

import copy
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from ffr.config import read_yaml_mapping
from ffr.errors import FFRError

# AWS access key ids (AKIA… long-term, ASIA… temporary) and the names credentials travel under.
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
_CREDENTIAL_NAMES = re.compile(r"aws_secret_access_key|aws_access_key_id|aws_session_token|RAY_AUTH_TOKEN=",
                               re.IGNORECASE)
_OPEN_CIDRS = ("0.0.0.0/0", "::/0")
_PLACEHOLDER = re.compile(r"REPLACE_ME\w*")
# GPU instance families (g4dn, g5, g6, g6e, gr6, p4d, p5...): Ray's fallback AMI for them is a CUDA 11.2 DLAMI.
_GPU_FAMILY = re.compile(r"(g|gr|p)\d")
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
_IMAGE_ID = re.compile(r"ami-[0-9a-f]{8}([0-9a-f]{9})?|resolve:ssm:/aws/service/deeplearning/ami/\S+")
REFRESH_COMMAND = (f"aws ssm get-parameters --region REGION --names {DLAMI_PARAMETER} "
                   "--query 'Parameters[0].Value' --output text")


def placeholders(text: str) -> list[str]:
    """``REPLACE_ME…`` names left in a config's ``text`` outside comments, each with its line number."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        content = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
        found += [f"{m.group(0)} (line {number})" for m in _PLACEHOLDER.finditer(content)]
    return found


def image_problems(config: dict[str, Any]) -> list[str]:
    """AWS GPU node types without a pinned, current host image (ImageId)."""
    if (config.get("provider") or {}).get("type") != "aws":
        return []
    problems = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        node_config = node_type.get("node_config") or {}
        gpu = bool(_GPU_FAMILY.match(str(node_config.get("InstanceType", "")))) or \
            bool((node_type.get("resources") or {}).get("GPU"))
        image = str(node_config.get("ImageId") or "")
        if gpu and (not image or image.lower() == "latest_dlami"):
            problems.append(f"GPU node type {name!r} has no ImageId, so Ray would launch its old default Deep "
                            "Learning AMI (CUDA 11.2); expected an ami-... id (from: "
                            f"{REFRESH_COMMAND}) or resolve:ssm:{DLAMI_PARAMETER}")
        elif image and not _PLACEHOLDER.search(image) and not _IMAGE_ID.fullmatch(image):
            problems.append(f"node type {name!r} has ImageId {image!r}; expected an ami-... id or "
                            f"resolve:ssm:{DLAMI_PARAMETER}")
    return problems


def ssh_problems(config: dict[str, Any]) -> list[str]:
    """An AWS config must declare where SSH may come from, or the launcher opens 22/tcp to 0.0.0.0/0."""
    provider = config.get("provider") or {}
    node_types = (config.get("available_node_types") or {}).values()
    if provider.get("type") != "aws" or all("SecurityGroupIds" in (t.get("node_config") or {}) for t in node_types):
        return []  # own security groups on every node type: the launcher creates none
    rules = (provider.get("security_group") or {}).get("IpPermissions") or []
    ssh = [r for r in rules if int(r.get("FromPort", -1)) <= 22 <= int(r.get("ToPort", -1))]
    if not ssh or not any(r.get("IpRanges") or r.get("Ipv6Ranges") or r.get("PrefixListIds") for r in ssh):
        return ["provider.security_group declares no SSH rule, so the launcher's default (22/tcp from 0.0.0.0/0) "
                "applies; expected IpPermissions admitting port 22 from your CIDR only"]
    return []


def token_warnings(config: dict[str, Any]) -> list[str]:
    """The local Ray token file that file_mounts copies to the cluster, if others can read it (or it is missing)."""
    warnings = []
    for target, source in (config.get("file_mounts") or {}).items():
        if not str(target).endswith("auth_token"):
            continue
        path = os.path.expanduser(str(source))
        if not os.path.exists(path):
            warnings.append(f"token file {source} does not exist yet; create it with `ray get-auth-token --generate` "
                            f"and `chmod 600 {source}`")
        elif os.stat(path).st_mode & 0o077:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            warnings.append(f"token file {source} has mode {mode:o}; anyone who can read it controls the cluster: "
                            f"chmod 600 {source}")
    return warnings


def ray_schema_errors(config: dict[str, Any]) -> None:
    """Run Ray's own expansion and validation; raise FFRError with Ray's first line on failure."""
    import logging

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config logs an INFO line about the head's max_workers that reads like a finding; it is not one.
    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "top level"
        raise FFRError(f"{e.message} (at {where})") from None
    except ValueError as e:
        raise FFRError(str(e).splitlines()[0]) from None


def _commands(config: dict[str, Any], key: str) -> str:
    return "\n".join(str(c) for c in config.get(key) or [])


def security_problems(config: dict[str, Any], text: str) -> list[str]:
    """Every way ``config`` (and its raw ``text``) breaks the security defaults; empty when it keeps them."""
    import ray

    problems = []
    if re.search(r"RAY_AUTH_MODE\s*=\s*disabled", text):
        problems.append("RAY_AUTH_MODE=disabled turns token authentication off; expected RAY_AUTH_MODE=token")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = _commands(config, key)
        if "ray start" in commands and not re.search(r"RAY_AUTH_MODE=token\b", commands):
            problems.append(f"{key} must export RAY_AUTH_MODE=token before `ray start`")
    head_start = _commands(config, "head_start_ray_commands")
    host = re.search(r"--dashboard-host[= ](\S+)", head_start)
    if host is None or host.group(1) not in ("127.0.0.1", "localhost"):
        problems.append("head `ray start` must pass --dashboard-host=127.0.0.1 (reach it with `ray dashboard`); "
                        f"found {host.group(1) if host else 'no --dashboard-host (Ray binds all interfaces)'}")
    if re.search(r"--host[= ]0\.0\.0\.0|--host[= ]::\s", text):
        problems.append("a service is bound to every interface (--host 0.0.0.0); expected a private address")
    if _AWS_KEY_ID.search(text) or _CREDENTIAL_NAMES.search(text):
        problems.append("the file holds credentials (an AWS key or token); use instance profiles / the environment")
    provider = config.get("provider") or {}
    for rule in (provider.get("security_group") or {}).get("IpPermissions") or []:
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges") or []]
        cidrs += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
        if any(c in _OPEN_CIDRS for c in cidrs):
            problems.append(f"security group rule for ports {rule.get('FromPort')}-{rule.get('ToPort')} is open "
                            "to the internet; admit only the cluster's own security group or VPC CIDR")
    if provider.get("type") == "aws":
        node_types = config.get("available_node_types") or {}
        head = node_types.get(config.get("head_node_type"), {})
        if (head.get("resources") or {}).get("CPU") != 0:
            problems.append("the head node type must declare resources: {CPU: 0} so no task runs on it")
        for name, node_type in node_types.items():
            if "IamInstanceProfile" not in (node_type.get("node_config") or {}):
                problems.append(f"node type {name!r} has no IamInstanceProfile; S3 access must come from one")
    docker = config.get("docker") or {}
    for key in ("image", "head_image", "worker_image"):
        image = docker.get(key)
        if image and not re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py\d+(-\w+)*", image):
            problems.append(f"docker.{key} {image!r} does not match the installed Ray {ray.__version__}; "
                            f"expected rayproject/ray:{ray.__version__}-py311-gpu")
    return problems


def check_cluster_config(path: str | Path, allow_placeholders: bool = False) -> dict[str, Any]:
    """Load and check ``path``; raise FFRError naming the file and the first problem found."""
    path = Path(path)
    config = read_yaml_mapping(path, "cluster config")
    text = path.read_text()
    left = placeholders(text)
    if left and not allow_placeholders:
        raise FFRError(f"{path}: placeholders left in: {', '.join(left)}; fill them in before `ray up` "
                       "(docs/cluster.md, step 1)")
    try:
        ray_schema_errors(config)
    except FFRError as e:
        raise FFRError(f"{path}: Ray rejects it: {e}") from None
    problems = image_problems(config) + ssh_problems(config) + security_problems(config, text)
    if problems:
        raise FFRError(f"{path}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return config


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    allow_placeholders = "--allow-placeholders" in args
    paths = [a for a in args if a != "--allow-placeholders"]
    if not paths or any(p.startswith("-") for p in paths):
        print("usage: python -m ffr.cluster.check [--allow-placeholders] CLUSTER.yaml [...]", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        try:
            config = check_cluster_config(path, allow_placeholders)
            for warning in token_warnings(config):
                print(f"ffr.cluster.check: warning: {path}: {warning}", file=sys.stderr)
            print(f"{path}: ok" + (" (placeholders not yet filled in)" if allow_placeholders and
                                   placeholders(Path(path).read_text()) else ""))
        except FFRError as e:
            print(f"ffr.cluster.check: error: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
