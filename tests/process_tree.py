"""Process-tree helpers for tests that kill Ray processes by pid (Ray workers get their own process groups,
so killpg misses them)."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Pids of every process under ``pid``, read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out
