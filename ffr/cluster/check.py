"""Check a cluster config before ``ray up`` (which has no dry run): Ray's own schema, then our security rules.

    python -m ffr.cluster.check cluster.yaml cluster-local.yaml

Ray's rules come from ``ray.autoscaler._private.util.prepare_config`` + ``validate_config`` (private API, hence
the exact Ray pin in pyproject.toml). Ours are the security defaults docs/cluster.md promises: token auth on
every node, dashboard on loopback, nothing opened to the internet, no keys in the file, an instance profile
per AWS node type, a CPU-0 head on AWS, and an image matching the installed Ray.
"""

from __future__ import annotations

import copy
import re
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


def ray_schema_errors(config: dict[str, Any]) -> None:
    """Run Ray's own expansion and validation; raise FFRError with Ray's first line on failure."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

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


def check_cluster_config(path: str | Path) -> dict[str, Any]:
    """Load and check ``path``; raise FFRError naming the file and the first problem found."""
    path = Path(path)
    config = read_yaml_mapping(path, "cluster config")
    text = path.read_text()
    try:
        ray_schema_errors(config)
    except FFRError as e:
        raise FFRError(f"{path}: Ray rejects it: {e}") from None
    problems = security_problems(config, text)
    if problems:
        raise FFRError(f"{path}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return config


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m ffr.cluster.check CLUSTER.yaml [...]", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        try:
            check_cluster_config(path)
            print(f"{path}: ok")
        except FFRError as e:
            print(f"ffr.cluster.check: error: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
