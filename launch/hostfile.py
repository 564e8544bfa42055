"""Hostfiles in DeepSpeed's format (`host slots=N`), parsed strictly.

DeepSpeed's own parser accepts any non-space token as a host and hands it to pdsh and ssh; ours accepts only
RFC 1123 names and IPv4 addresses, so nothing a shell would interpret ever reaches one.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from pathlib import Path

from medtrain.core.errors import UserError
from medtrain.core.publish import publish_text


class HostfileError(UserError):
    """A hostfile the user can fix; the message names file:line."""


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_LINE = re.compile(r"^(?P<host>\S+)(?:\s+(?P<rest>.*))?$")


def is_valid_host(host: str) -> bool:
    """RFC 1123 hostname or dotted-quad IPv4."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
        except ValueError:
            return False
    if len(host) > 253:
        return False
    return all(_LABEL.match(label) for label in host.split("."))


def parse_hostfile_text(text: str, source: str = "<hostfile>") -> OrderedDict[str, int]:
    """Return {host: slots} in file order, the same mapping deepspeed's fetch_hostfile gives for valid files."""
    pool: OrderedDict[str, int] = OrderedDict()
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        m = _LINE.match(line)
        host, rest = m.group("host"), (m.group("rest") or "").strip()
        if not is_valid_host(host):
            raise HostfileError(
                f"{where}: '{host}' is not a valid hostname or IPv4 address; "
                "use letters, digits, '-' and '.' only (RFC 1123), e.g. 'node01 slots=6'"
            )
        sm = re.fullmatch(r"slots=(\S+)", rest)
        if not sm:
            raise HostfileError(f"{where}: expected '{host} slots=N' (N = GPUs on that host), got '{line}'")
        if not re.fullmatch(r"[0-9]+", sm.group(1)) or int(sm.group(1)) <= 0:
            raise HostfileError(f"{where}: slots={sm.group(1)} must be a positive integer, e.g. '{host} slots=6'")
        if host in pool:
            raise HostfileError(
                f"{where}: host '{host}' already listed on line {first_line[host]}; list each host once with "
                "its total slots"
            )
        pool[host] = int(sm.group(1))
        first_line[host] = lineno
    if not pool:
        raise HostfileError(f"{source}: no hosts; add lines like 'node01 slots=6'")
    return pool


def read_hostfile(path: str | Path) -> OrderedDict[str, int]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HostfileError(f"{path}: no such hostfile; write one with `medtrain hostfile`") from None
    except UnicodeDecodeError:
        raise HostfileError(f"{path}: not UTF-8 text; a hostfile holds lines like 'node01 slots=6'") from None
    return parse_hostfile_text(text, source=str(path))


def render_hostfile(nodes: int, slots: int, prefix: str = "node", start: int = 1, width: int = 2) -> str:
    if nodes <= 0 or slots <= 0:
        raise HostfileError(f"--nodes={nodes} and --slots={slots} must both be positive")
    hosts = [f"{prefix}{i:0{width}d}" for i in range(start, start + nodes)]
    bad = [h for h in hosts if not is_valid_host(h)]
    if bad:
        raise HostfileError(f"--prefix '{prefix}' makes invalid hostnames like '{bad[0]}'; use letters, digits, '-'")
    header = f"# {nodes} nodes x {slots} slots = {nodes * slots} ranks; written by `medtrain hostfile`\n"
    return header + "".join(f"{h} slots={slots}\n" for h in hosts)


def write_hostfile(text: str, out: Path) -> None:
    parse_hostfile_text(text, source=str(out))
    publish_text(out, text)
