"""Which addresses a cluster service may bind to: loopback or the private network, never everything.

The head's MLflow server and any helper service must not be reachable from the internet even if a security
group is misconfigured, so the bind address itself is checked: 0.0.0.0 / :: and public addresses are refused.

``python -m ffr.cluster.network private-address`` prints this host's private IPv4 address (used in cluster.yaml).
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from ffr.errors import FFRError


def check_bind_host(host: str) -> str:
    """Return ``host`` if it is a loopback or private address; raise FFRError for wildcard or public ones."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost":
            return host
        raise FFRError(
            f"bind host {host!r} is not an IP address; expected 127.0.0.1 or a private IPv4/IPv6 address") from None
    if ip.is_unspecified:
        raise FFRError(f"bind host {host!r} listens on every interface; expected 127.0.0.1 or a private address")
    if not (ip.is_loopback or ip.is_private) or ip.is_link_local:
        raise FFRError(f"bind host {host!r} is not a loopback or private address; refusing to expose it")
    return host


def private_address() -> str:
    """This host's IPv4 address on its private network (the interface routing to 10/8), checked private.

    Connecting a UDP socket sends nothing; it only asks the kernel which local address it would route from.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.254", 9))
            address = s.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return check_bind_host(address)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["private-address"]:
        print("usage: python -m ffr.cluster.network private-address", file=sys.stderr)
        return 2
    try:
        print(private_address())
    except FFRError as e:
        print(f"ffr.cluster.network: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
