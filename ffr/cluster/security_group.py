"""Create the cluster's security group with exactly the inbound rules cluster.yaml declares, before ``ray up``.

    python -m ffr.cluster.security_group cluster.yaml [--vpc-id vpc-...]

Ray's launcher creates ``provider.security_group.GroupName`` when it is missing and then always adds SSH from
0.0.0.0/0 next to the declared rules; it leaves a group that already has rules alone
(``ray/autoscaler/_private/aws/config.py``: ``_upsert_security_group_rules``). So this command creates the group
first, with "all traffic from members of this group" plus the declared ``IpPermissions`` (SSH from your CIDR),
and removes any rule open to the whole internet from an existing one. Run it again whenever the CIDR changes.
Credentials are your usual AWS CLI ones (profile or SSO); nothing is written to disk.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ffr.cluster.check import placeholders
from ffr.config import read_yaml_mapping
from ffr.errors import FFRError

_OPEN = ("0.0.0.0/0", "::/0")


def _is_open(permission: dict[str, Any]) -> bool:
    return any(r.get("CidrIp") in _OPEN for r in permission.get("IpRanges") or []) or \
        any(r.get("CidrIpv6") in _OPEN for r in permission.get("Ipv6Ranges") or [])


def declared_rules(config: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(region, group name, declared inbound rules) of an AWS cluster config; FFRError if unusable."""
    provider = config.get("provider") or {}
    if provider.get("type") != "aws":
        raise FFRError(f"provider type {provider.get('type')!r}; expected aws (security groups are AWS only)")
    group = provider.get("security_group") or {}
    if not group.get("GroupName") or not group.get("IpPermissions"):
        raise FFRError("provider.security_group needs GroupName and IpPermissions (SSH from your CIDR)")
    rules = group["IpPermissions"]
    if any(_is_open(r) for r in rules):
        raise FFRError("provider.security_group.IpPermissions admits 0.0.0.0/0 or ::/0; expected your own CIDR")
    return provider["region"], group["GroupName"], rules


def ensure_security_group(config: dict[str, Any], vpc_id: str | None = None) -> str:
    """Create or fix the group; returns its id. Idempotent."""
    import boto3

    region, name, rules = declared_rules(config)
    ec2 = boto3.client("ec2", region_name=region)
    if vpc_id is None:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise FFRError(f"region {region} has no default VPC; pass --vpc-id (the VPC of your SubnetIds)")
        vpc_id = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                  {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    if found:
        group_id, existing = found[0]["GroupId"], found[0].get("IpPermissions") or []
    else:
        group_id = ec2.create_security_group(GroupName=name, VpcId=vpc_id,
                                             Description="ffr Ray cluster: own members, SSH from one CIDR")["GroupId"]
        existing = []
    open_rules = [p for p in existing if _is_open(p)]
    if open_rules:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=open_rules)
    wanted = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}, *rules]
    for permission in wanted:
        try:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission])
        except ec2.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "InvalidPermission.Duplicate":
                raise
    return group_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffr.cluster.security_group", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="cluster.yaml")
    parser.add_argument("--vpc-id", default=None, help="default: the region's default VPC")
    args = parser.parse_args(argv)
    try:
        config = read_yaml_mapping(args.config, "cluster config")
        left = [p for p in placeholders(open(args.config).read()) if "CIDR" in p]
        if left:
            raise FFRError(f"{args.config}: fill in {', '.join(left)} first (your own address, e.g. 203.0.113.7/32)")
        group_id = ensure_security_group(config, args.vpc_id)
    except FFRError as e:
        print(f"ffr.cluster.security_group: error: {e}", file=sys.stderr)
        return 2
    print(f"security group {group_id}: members of itself, plus {len(declared_rules(config)[2])} declared rule(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
