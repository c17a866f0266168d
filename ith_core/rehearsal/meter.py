"""Resources of this process over time, for attributing them to the pipeline's stages afterwards.

`ResourceMeter` samples every `interval` seconds, in a thread:
- peak resident memory since the previous sample: Linux's VmHWM, reset after each read through
  /proc/self/clear_refs, so a spike between two samples is still seen (where that file cannot be
  written, the current RSS is sampled instead and `exact_peaks` is false);
- the resident memory of its child processes (the `accelerate launch` trainings), sampled: their
  sum at each sample, so a child's spike shorter than the interval can be missed;
- bytes this process caused to be written to storage (/proc/self/io write_bytes; a child's writes
  are its own and not counted);
- on CUDA, the peak allocated device memory since the previous sample (reset after each read).

`window(t0, t1)` gives the peaks and bytes of the samples between two `time.time()` stamps, e.g.
a Prefect task run's start and end.

    with ResourceMeter() as meter:
        ...
    meter.window(start, end)   # {"peak_rss_bytes": ..., "peak_total_rss_bytes": ..., "bytes_written": ..., ...}
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import psutil
import torch

_PAGE_KB = 1024


def _read_hwm() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) * _PAGE_KB if match else None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _write_bytes() -> int | None:
    try:
        match = re.search(r"^write_bytes:\s+(\d+)", Path("/proc/self/io").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class ResourceMeter:
    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        # (time, peak RSS since the previous sample, bytes written so far, CUDA peak, children's RSS)
        self.samples: list[tuple[float, int, int | None, int | None, int]] = []
        self.loads: list[float] = []  # 1-minute load average at each sample
        self.exact_peaks = _read_hwm() is not None and _reset_hwm()
        self.cuda = torch.cuda.is_available()
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rehearsal-meter", daemon=True)

    def __enter__(self) -> "ResourceMeter":
        self.started = time.time()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.stopped = time.time()

    def _sample(self) -> None:
        if self.exact_peaks:
            rss = _read_hwm() or 0
            _reset_hwm()
        else:
            rss = self._process.memory_info().rss
        cuda = None
        if self.cuda:
            cuda = max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
            for d in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(d)
        children = 0
        for child in self._process.children(recursive=True):
            try:
                children += child.memory_info().rss
            except psutil.Error:  # ended between listing and reading
                pass
        self.samples.append((time.time(), rss, _write_bytes(), cuda, children))
        self.loads.append(os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def window(self, t0: float, t1: float) -> dict:
        """Peak RSS (this process; its children; both together), bytes written and peak CUDA memory of the
        samples that cover [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1 + self.interval]
        before = [s for s in self.samples if s[0] < t0]
        if not inside:
            inside = [min(self.samples, key=lambda s: abs(s[0] - t1))]
        start_bytes = before[-1][2] if before else self.samples[0][2]
        end_bytes = inside[-1][2]
        cuda = [s[3] for s in inside if s[3] is not None]
        return {
            "peak_rss_bytes": max(s[1] for s in inside),
            "peak_children_rss_bytes": max(s[4] for s in inside),
            "peak_total_rss_bytes": max(s[1] + s[4] for s in inside),
            "bytes_written": (end_bytes - start_bytes) if None not in (start_bytes, end_bytes) else None,
            "peak_cuda_bytes": max(cuda) if cuda else None,
        }

    def overall(self) -> dict:
        return self.window(self.started, self.stopped)

    def load_average(self) -> dict:
        """The machine's 1-minute load average over the metered time (mean, max) beside its CPU count:
        a load above the CPUs this work uses means other work shared the machine."""
        loads = self.loads or [0.0]
        return {"mean": round(sum(loads) / len(loads), 2), "max": round(max(loads), 2), "cpus": os.cpu_count()}
