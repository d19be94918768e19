"""Shared helpers of the generation benchmarks: per-shard timings and process-tree memory sampling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ffr.shards import complete_shards, read_stats


def steady_rate(root: str) -> float:
    """Images/s between the first and the last shard completion (startup of the pool excluded)."""
    stats = sorted((read_stats(root, s) for s in complete_shards(root)), key=lambda st: st["finished_at"])
    if len(stats) < 2:
        return float("nan")
    span = stats[-1]["finished_at"] - stats[0]["finished_at"]
    return sum(st["n_rows"] for st in stats[1:]) / span if span > 0 else float("nan")


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(stat.parent.name))
    return out


def _mem_mb(pid: int, field: str) -> float:
    """``Rss`` or ``Pss`` from /proc/<pid>/smaps_rollup. Pss splits shared pages (libtorch, the Ray object
    store mapping) among the processes that map them, so Pss sums over a tree without double counting."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class MemorySampler:
    """Peak memory (MB) of this driver (RSS), the largest Ray worker (RSS), all Ray workers (``ray::*``, PSS sum)
    and the whole process tree (PSS sum: what the run really occupies), sampled from /proc."""

    def __init__(self, root_pid: int, exclude: set[int] | None = None, interval: float = 0.5) -> None:
        self.root_pid, self.exclude, self.interval = root_pid, exclude or set(), interval
        self.peak = {"driver_mb": 0.0, "max_worker_mb": 0.0, "workers_total_mb": 0.0, "tree_total_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        kids, todo, pids = _children(), [self.root_pid], []
        while todo:
            for k in kids.get(todo.pop(), []):
                if k not in self.exclude:
                    pids.append(k)
                    todo.append(k)
        workers = [p for p in pids if _cmd(p).startswith("ray::")]
        now = {"driver_mb": _mem_mb(self.root_pid, "Rss"),
               "max_worker_mb": max((_mem_mb(p, "Rss") for p in workers), default=0.0),
               "workers_total_mb": sum(_mem_mb(p, "Pss") for p in workers),
               "tree_total_mb": sum(_mem_mb(p, "Pss") for p in [self.root_pid, *pids])}
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
