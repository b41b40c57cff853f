"""A DeepSpeed hostfile built from Slurm's node list, for `launch/pretrain.sh`.

Kept free of third-party imports so the launcher can call it before anything heavy loads, and kept in Python
rather than shell so the node-list expansion (`scontrol show hostnames`) is tested here instead of needing a
Slurm installation on every node.

    python -m pipeline.launch.hostfile --slurm-nodelist 'gpu[01-04]' --slots 8 --out hostfile   # prints the master host
    python -m pipeline.launch.hostfile --print-hosts                                           # one host a line
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import sys
import tempfile
from collections.abc import Sequence

from preprocessing.errors import BertpipeError, report

NODELIST_ENV = "SLURM_JOB_NODELIST"
# Slurm refuses ranges longer than this (MAX_RANGE in hostlist.c); a typo such as n[1-100000000] should fail
# with a message rather than exhaust memory.
MAX_RANGE = 64 * 1024
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


class HostfileError(BertpipeError, ValueError):
    """A node list or host list that makes no hostfile; the message says what is wrong with it."""


def _malformed(nodelist: str, problem: str) -> HostfileError:
    return HostfileError(f"malformed Slurm node list {nodelist!r}: {problem}")


def _split_top_level(nodelist: str) -> list[str]:
    """Split on the commas outside brackets: those inside (`gpu[01,03]`) belong to one name's ranges."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(nodelist):
        if char == "[":
            if depth:
                raise _malformed(nodelist, f"nested '[' at position {i}")
            depth = 1
        elif char == "]":
            if not depth:
                raise _malformed(nodelist, f"']' without a matching '[' at position {i}")
            depth = 0
        elif char == "," and not depth:
            items.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise _malformed(nodelist, "unbalanced '[': a bracket is never closed")
    items.append(nodelist[start:])
    return items


def _expand_ranges(nodelist: str, ranges: str) -> list[str]:
    """`01-03,07` -> 01 02 03 07; the width of a range's start sets the zero padding, as in Slurm."""
    numbers: list[str] = []
    for part in ranges.split(","):
        match = _RANGE.fullmatch(part)
        if match is None:
            raise _malformed(nodelist, f"[{ranges}] holds {part!r}, which is not a number or a range like 1-4")
        low, high = match.groups()
        if high is None:
            numbers.append(low)
            continue
        first, last = int(low), int(high)
        if first > last:
            raise _malformed(nodelist, f"range {part} in [{ranges}] starts after it ends")
        if last - first + 1 > MAX_RANGE:
            raise _malformed(nodelist, f"range {part} in [{ranges}] has more than {MAX_RANGE} hosts")
        numbers.extend(str(n).zfill(len(low)) for n in range(first, last + 1))
    return numbers


def _expand_name(nodelist: str, name: str) -> list[str]:
    """One top-level item, with any number of bracket groups; the leftmost group varies slowest."""
    choices: list[list[str]] = []
    rest = name
    while "[" in rest:
        literal, _, rest = rest.partition("[")
        ranges, _, rest = rest.partition("]")
        if not ranges:
            raise _malformed(nodelist, f"empty brackets in {name!r}")
        choices.append([literal])
        choices.append(_expand_ranges(nodelist, ranges))
    choices.append([rest])
    return ["".join(parts) for parts in itertools.product(*choices)]


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a Slurm node list, in order, as `scontrol show hostnames` prints them.

    `gpu[01-03,07]` -> gpu01 gpu02 gpu03 gpu07; `rack[1-2]-n[1-2]` -> rack1-n1 rack1-n2 rack2-n1 rack2-n2.
    Duplicates are kept, as Slurm keeps them. Raises ValueError, quoting the list, when it is malformed.
    """
    stripped = nodelist.strip()
    if not stripped:
        raise HostfileError(f"empty Slurm node list {nodelist!r}: expected names such as 'node1' or 'gpu[01-04]'")
    hosts: list[str] = []
    for item in _split_top_level(stripped):
        name = item.strip()
        if not name:
            raise _malformed(nodelist, "empty name between commas")
        if any(char.isspace() for char in name):
            raise _malformed(nodelist, f"whitespace inside {name!r}; separate names with commas")
        hosts.extend(_expand_name(nodelist, name))
    return hosts


def hostfile_text(hosts: list[str], slots: int) -> str:
    """DeepSpeed hostfile lines `host slots=N`, one per host.

    A repeated host would make DeepSpeed start two sets of ranks on one node, so it is refused rather than merged.
    """
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise HostfileError(f"slots must be a whole number of at least 1 (processes per node), got {slots!r}")
    if not hosts:
        raise HostfileError("no hosts to write: the hostfile needs at least one")
    seen: set[str] = set()
    for host in hosts:
        if not host or any(char.isspace() for char in host):
            raise HostfileError(f"host name {host!r} is empty or contains whitespace")
        if host in seen:
            raise HostfileError(f"host {host!r} appears more than once; each node may be listed only once")
        seen.add(host)
    return "".join(f"{host} slots={slots}\n" for host in hosts)


def write_atomically(path: str, text: str) -> None:
    """Replace `path` in one step, so a launcher never reads a half-written hostfile."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the hostfile an ordinary file's mode
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.launch.hostfile",
        description="Write a DeepSpeed hostfile from a Slurm node list and print the master host.",
    )
    parser.add_argument(
        "--slurm-nodelist",
        metavar="LIST",
        help=f"Slurm node list such as 'gpu[01-04]' (default: ${NODELIST_ENV})",
    )
    parser.add_argument("--slots", type=int, metavar="N", help="processes (GPUs) per node; required with --out")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", metavar="PATH", help="hostfile to write; the first host is printed on stdout")
    action.add_argument("--print-hosts", action="store_true", help="print the expanded hosts, one a line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; errors go to stderr with exit status 2, never as a traceback."""
    parser = _parser()
    args = parser.parse_args(argv)
    nodelist = args.slurm_nodelist if args.slurm_nodelist is not None else os.environ.get(NODELIST_ENV)
    if nodelist is None:
        parser.error(f"no node list: set {NODELIST_ENV} (run inside a Slurm job) or pass --slurm-nodelist")
    if args.out is not None and args.slots is None:
        parser.error("--out needs --slots N (processes per node)")
    try:
        hosts = expand_nodelist(nodelist)
        if args.print_hosts:
            sys.stdout.write("".join(f"{host}\n" for host in hosts))
            return 0
        text = hostfile_text(hosts, args.slots)
    except BertpipeError as error:
        return report(error, f"{parser.prog}: error")
    try:
        write_atomically(args.out, text)
    except OSError as error:
        print(f"{parser.prog}: error: cannot write the hostfile {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(hosts[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
