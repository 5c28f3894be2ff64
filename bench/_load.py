"""How busy the rest of the machine was while a benchmark ran (Linux /proc/stat)."""
from __future__ import annotations

import os
import time


def _machine_s() -> tuple[float, float] | None:
    """(busy, steal) CPU-seconds since boot: user+nice+system+irq+softirq, and time the
    hypervisor gave this VM's CPUs to someone else."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz


def tree_cpu_seconds(exclude: set[int] | frozenset = frozenset()) -> float:
    """CPU-seconds (user + system) used so far by this process and its descendants, living
    (the live voice runs in a worker process) or exited and waited for; processes in
    *exclude* (a service the benchmark started, such as nginx) and theirs are left out."""
    hz = os.sysconf("SC_CLK_TCK")
    parent, ticks = {}, {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    me = os.getpid()
    tree, changed = {me}, True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree and pid not in exclude:
                tree.add(pid)
                changed = True
    t = os.times()
    live = sum(ticks.get(pid, 0) for pid in tree) / hz if ticks else t.user + t.system
    return live + t.children_user + t.children_system


class OtherLoad:
    """CPU seconds spent by every process outside this one and its descendants between
    start() and stop()."""

    def __init__(self, exclude: set[int] | frozenset = frozenset()) -> None:
        self.exclude = exclude

    def start(self) -> "OtherLoad":
        self._wall, self._machine, self._mine = time.perf_counter(), _machine_s(), tree_cpu_seconds(self.exclude)
        return self

    def stop(self) -> str:
        wall = time.perf_counter() - self._wall
        now = _machine_s()
        if now is None or self._machine is None:
            return "other load: unknown (no /proc/stat)"
        other = max(0.0, (now[0] - self._machine[0]) - (tree_cpu_seconds(self.exclude) - self._mine))
        steal = now[1] - self._machine[1]
        share = 100 * other / wall / (os.cpu_count() or 1)
        return (f"other processes used {other:.1f} CPU-s and the hypervisor stole {steal:.1f} CPU-s during the "
                f"{wall:.1f} s run ({share:.0f}% of the {os.cpu_count()} CPUs; both near 0 on an idle machine)")


def cpu_model() -> str:
    """The CPU a benchmark ran on, for its table: model name and logical CPUs this process may use
    (results from an AMD EPYC and an Intel Xeon differ by up to 2x)."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        import platform

        name = platform.processor() or name
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {name}, {cpus} logical CPUs ({os.cpu_count()} on the machine)"
