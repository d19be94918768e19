"""The cluster's security group, made by ffr.cluster.security_group against EC2 (the moto server), then handed to
Ray's own launcher code: SSH stays limited to the declared CIDR, while a group Ray creates itself gets 0.0.0.0/0."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import yaml

from ffr.cluster.security_group import ensure_security_group, main
from ffr.errors import FFRError

REPO = Path(__file__).resolve().parents[1]
CIDR = "203.0.113.7/32"


def _config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text().replace("REPLACE_ME_SSH_CIDR", CIDR))


def _ingress(ec2, group_id: str) -> list[dict]:
    return ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissions"]


def _cidrs(permissions: list[dict]) -> set[str]:
    return {r["CidrIp"] for p in permissions for r in p.get("IpRanges", [])}


def test_group_admits_ssh_from_the_declared_cidr_only_and_ray_leaves_it_so(s3_endpoint):
    from ray.autoscaler._private.aws.config import _upsert_security_group_rules

    config = _config()
    config["provider"]["security_group"]["GroupName"] = "ffr-sg-test-declared"
    group_id = ensure_security_group(config)
    assert ensure_security_group(config) == group_id  # idempotent: `ray up` reruns, CIDR changes
    ec2 = boto3.client("ec2", region_name=config["provider"]["region"])
    rules = _ingress(ec2, group_id)
    assert _cidrs(rules) == {CIDR}
    assert [p["FromPort"] for p in rules if p.get("IpRanges")] == [22]
    assert any(pair["GroupId"] == group_id for p in rules for pair in p.get("UserIdGroupPairs", []))

    resource = boto3.resource("ec2", region_name=config["provider"]["region"])
    _upsert_security_group_rules(config, {"head": resource.SecurityGroup(group_id)})
    assert _cidrs(_ingress(ec2, group_id)) == {CIDR}  # Ray found rules and added none

    # Control: a fresh group, as Ray creates it when nobody ran the command, gets SSH from everywhere.
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    bare = ec2.create_security_group(GroupName="ffr-sg-test-bare", VpcId=vpc, Description="bare")["GroupId"]
    _upsert_security_group_rules(config, {"head": resource.SecurityGroup(bare)})
    assert "0.0.0.0/0" in _cidrs(_ingress(ec2, bare))

    # An existing open rule is removed when the command runs again.
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ensure_security_group(config)
    assert _cidrs(_ingress(ec2, group_id)) == {CIDR}


def test_open_or_missing_rules_are_refused(capsys):
    config = _config()
    config["provider"]["security_group"]["IpPermissions"][0]["IpRanges"] = [{"CidrIp": "0.0.0.0/0"}]
    with pytest.raises(FFRError, match="0.0.0.0/0"):
        ensure_security_group(config)
    assert main([str(REPO / "cluster.yaml")]) == 2  # the shipped template: CIDR not filled in yet
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "REPLACE_ME_SSH_CIDR" in err
