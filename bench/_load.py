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


class OtherLoad:
    """CPU seconds spent by every other process between start() and stop()."""

    def start(self) -> "OtherLoad":
        t = os.times()
        self._wall, self._machine, self._mine = time.perf_counter(), _machine_s(), t.user + t.system
        return self

    def stop(self) -> str:
        t = os.times()
        wall = time.perf_counter() - self._wall
        now = _machine_s()
        if now is None or self._machine is None:
            return "other load: unknown (no /proc/stat)"
        other = max(0.0, (now[0] - self._machine[0]) - (t.user + t.system - self._mine))
        steal = now[1] - self._machine[1]
        share = 100 * other / wall / (os.cpu_count() or 1)
        return (f"other processes used {other:.1f} CPU-s and the hypervisor stole {steal:.1f} CPU-s during the "
                f"{wall:.1f} s run ({share:.0f}% of the {os.cpu_count()} CPUs; both near 0 on an idle machine)")
