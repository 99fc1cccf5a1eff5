"""Run one measured job in this (fresh) process and print its figures as one JSON line.

    python -m benchmarks.child benchmarks.bench_load:clipcore_job '{"path": "...", "backend": "eager"}'

The job function does its setup (imports, warm-up of lazily imported modules) and returns a callable; only
that callable is measured:
- `seconds`: wall time of the call;
- `peak_rss_bytes`: the process's peak resident set during the call, above its resident set just before.
  The peak is reset first by writing 5 to /proc/self/clear_refs, then read from VmHWM in /proc/self/status
  (Linux); without those files, ru_maxrss is used, which cannot be reset (the baseline then includes the
  imports' own peak, so the figure is a lower bound of the same quantity);
- `touch_seconds` and `peak_rss_touched_bytes`: the same after touching every parameter and buffer of the
  returned model once (memory-mapped weights are only read from the file then), i.e. a model in use;
- `parameters` and `dtypes`: what was built, so that both sides can be checked to have done the same work.
"""

from __future__ import annotations

import gc
import importlib
import json
import resource
import sys
import time
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss() -> int:
    value = _status_bytes("VmRSS")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Reset the peak-RSS counter; False where the kernel offers no way to."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    value = _status_bytes("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def find_module(value):
    """The nn.Module in what a loader returned (a model, or a (model, preprocess) tuple)."""
    import torch

    if isinstance(value, torch.nn.Module):
        return value
    if isinstance(value, tuple | list):
        for item in value:
            if isinstance(item, torch.nn.Module):
                return item
    return None


def touch(model) -> None:
    """Read every weight once (a sum per tensor), as a first forward pass would."""
    import torch

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.sum()


def main(job: str, kwargs: dict) -> dict:
    module_name, function_name = job.split(":")
    measured = getattr(importlib.import_module(module_name), function_name)(**kwargs)
    gc.collect()
    baseline = current_rss()
    resettable = reset_peak()
    start = time.perf_counter()
    result = measured()
    seconds = time.perf_counter() - start
    peak = peak_rss()
    figures = {"seconds": seconds, "peak_rss_bytes": peak - baseline, "baseline_rss_bytes": baseline,
               "peak_resettable": resettable}
    model = find_module(result)
    if model is not None:
        start = time.perf_counter()
        touch(model)
        figures["touch_seconds"] = time.perf_counter() - start
        figures["peak_rss_touched_bytes"] = peak_rss() - baseline
        tensors = list(model.parameters()) + list(model.buffers())
        figures["parameters"] = sum(p.numel() for p in model.parameters())
        figures["dtypes"] = sorted({str(t.dtype) for t in tensors if t.is_floating_point()})
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))), flush=True)
