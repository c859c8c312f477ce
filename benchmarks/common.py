"""Shared by the benchmarks: peak memory of a block of code."""

from __future__ import annotations

import os
import threading


class PeakRSS:
    """Highest resident set size minus the size at entry, sampled from /proc every 5 ms (so it
    sees C/C++ allocations too, which tracemalloc does not)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def grown_gb(self) -> float:
        return (self.peak - self.base) / 1e9
