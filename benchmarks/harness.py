"""The shared benchmark harness: clipcore against the reference on the same inputs, in the same run.

Every case ends in one `record(...)`: both figures, their unit, the ratio, the target ratio and the machine.
The records go into pytest-benchmark's `extra_info` and into a session collector (`RESULTS`) from which
benchmarks/conftest.py writes benchmarks/REPORT.md and the ratio chart at the end of the session.

    from benchmarks import harness

    def test_something(benchmark):
        harness.throughput(benchmark, "tokenizer: english", ours=lambda: ..., reference=lambda: ...,
                           items=3000, unit="captions/s", target=3.0)

    # figures measured some other way (a GPU loop, a child process):
    harness.record(benchmark, "gpu: images/s B/32 fp16", 5200.0, 3900.0, "images/s", target=1.3, gpu=True)

Ratios always read "how many times better clipcore is": rate_ours / rate_reference for throughputs and
time_reference / time_ours for times (`lower_is_better=True`). A case whose yardstick is not the reference
(peak memory against the fp32 model size) passes its own `ratio` and `at_most=True`.

`harness.quick()` is True under `pytest benchmarks --quick`: each case then runs once at its smallest size
(`harness.rounds(n)` gives 1, `harness.pick(full, quick)` chooses a parameter list).

Load time and peak memory are measured in a fresh child process per side and round (`child(...)`), so one
side's allocations never count against the other: see benchmarks/child.py.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
ROUND_SECONDS = 0.3  # a throughput round runs about this long per side (less under --quick)

_state = {"quick": False}


def quick() -> bool:
    """True under `pytest benchmarks --quick` (set by benchmarks/conftest.py)."""
    return _state["quick"]


def set_quick(value: bool) -> None:
    _state["quick"] = bool(value)


def rounds(full: int) -> int:
    """How many measured rounds: `full`, or 1 under --quick."""
    return 1 if quick() else full


def pick(full: Sequence[T], quick_values: Sequence[T]) -> list[T]:
    """A parameter list: `full` normally, `quick_values` under --quick (decided at collection time)."""
    return list(quick_values if quick() else full)


# --- the machine ------------------------------------------------------------------------------------------------


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(gpu: bool = False) -> dict[str, Any]:
    """Where a figure was measured: CPU model, cores, torch version and threads (and the GPU when used)."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if gpu and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_text(info: dict[str, Any]) -> str:
    """The machine without the thread count (which varies by case: the report shows it per row)."""
    text = f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}"
    return text + (f", {info['gpu']}" if info.get("gpu") else "")


def number(value: float) -> str:
    """4 significant digits, thousands separated, never in exponent form."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}"


# --- results ------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One case: clipcore's figure, the reference's figure, and how the ratio compares to the target."""

    case: str
    clipcore: float
    reference: float | None
    unit: str
    ratio: float
    target: float | None = None
    at_most: bool = False  # the ratio must stay <= target (memory) instead of >= target (speed)
    ratio_range: tuple[float, float] | None = None  # per-round spread, when rounds were paired
    reference_name: str = ""
    note: str = ""
    machine: dict[str, Any] = field(default_factory=machine)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio <= self.target if self.at_most else self.ratio >= self.target

    @property
    def status(self) -> str:
        return {None: "", True: "✓", False: "below target"}[self.meets_target]

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'≤' if self.at_most else '≥'} {self.target:g}x"

    def line(self) -> str:
        ref = number(self.reference) if self.reference is not None else "-"
        spread = f" [{self.ratio_range[0]:.2f}-{self.ratio_range[1]:.2f}]" if self.ratio_range else ""
        target = f" (target {self.target_text()}: {self.status})" if self.target is not None else ""
        return (f"{self.case}: clipcore {number(self.clipcore)} {self.unit}, {self.reference_name or 'reference'} "
                f"{ref}, ratio {self.ratio:.2f}x{spread}{target}")


RESULTS: list[Result] = []  # this session's records, in the order they were made


def record(
    benchmark: Any,
    case: str,
    clipcore: float,
    reference: float | None,
    unit: str,
    *,
    lower_is_better: bool = False,
    ratio: float | None = None,
    target: float | None = None,
    at_most: bool = False,
    ratio_range: tuple[float, float] | None = None,
    reference_name: str = "",
    note: str = "",
    gpu: bool = False,
    extra: dict[str, Any] | None = None,
) -> Result:
    """Record one case (into `benchmark.extra_info` when a benchmark fixture is given, and into RESULTS).

    The ratio defaults to clipcore/reference (reference/clipcore with `lower_is_better`), so above 1 means
    clipcore is better; pass `ratio` for another yardstick.
    """
    if ratio is None:
        if reference is None:
            raise ValueError(f"{case}: a case without a reference figure needs an explicit ratio")
        ratio = reference / clipcore if lower_is_better else clipcore / reference
    result = Result(case, float(clipcore), None if reference is None else float(reference), unit, float(ratio),
                    target, at_most, ratio_range, reference_name, note, machine(gpu), dict(extra or {}))
    RESULTS.append(result)
    if benchmark is not None:
        info = asdict(result)
        info["status"] = result.status
        benchmark.extra_info.update(info)
    print("\n" + result.line())
    return result


# --- measuring ----------------------------------------------------------------------------------------------------


def interleave(benchmark: Any, ours: Callable[[], T], reference: Callable[[], T], n: int) -> tuple[list[T], list[T]]:
    """Run reference, ours, reference, ours, ... `n` times each (noise from other processes hits both alike).

    clipcore's first call goes through `benchmark.pedantic`, so pytest-benchmark's statistics and JSON hold
    that case; the values each call returns (seconds, a child's figures, ...) are collected per side.
    """
    mine: list[T] = []
    theirs: list[T] = []
    for i in range(n):
        theirs.append(reference())
        if i == 0 and benchmark is not None:
            mine.append(benchmark.pedantic(ours, rounds=1, iterations=1))
        else:
            mine.append(ours())
    return mine, theirs


def calls_per_round(fn: Callable[[], object], seconds: float | None = None) -> int:
    """How many calls of `fn` make one round of about `seconds` (one warm-up call is made here)."""
    seconds = seconds if seconds is not None else (ROUND_SECONDS / 3 if quick() else ROUND_SECONDS)
    start = time.perf_counter()
    fn()
    return max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))


def timed(fn: Callable[[], object], calls: int = 1) -> Callable[[], float]:
    """A callable that runs `fn` `calls` times and returns the seconds per call."""

    def run() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls

    return run


def throughput(
    benchmark: Any,
    case: str,
    ours: Callable[[], object],
    reference: Callable[[], object],
    *,
    items: int,
    unit: str,
    target: float | None = None,
    n_rounds: int = 5,
    reference_name: str = "",
    note: str = "",
    gpu: bool = False,
    extra: dict[str, Any] | None = None,
) -> Result:
    """Items per second of both sides: interleaved rounds of about ROUND_SECONDS, best round of each."""
    calls = max(calls_per_round(ours), calls_per_round(reference)) if not quick() else 1
    if quick():
        ours(), reference()  # warm-up
    mine, theirs = interleave(benchmark, timed(ours, calls), timed(reference, calls), rounds(n_rounds))
    rate_ours, rate_ref = items / min(mine), items / min(theirs)
    paired = sorted(t / m for m, t in zip(mine, theirs, strict=True))
    return record(benchmark, case, rate_ours, rate_ref, unit, target=target, ratio_range=(paired[0], paired[-1]),
                  reference_name=reference_name, note=note, gpu=gpu,
                  extra={"calls_per_round": calls, "rounds": len(mine), **(extra or {})})


def child(job: str, timeout: float = 1800, **kwargs: Any) -> dict[str, Any]:
    """Run `job` ("module:function") in a fresh Python process through benchmarks/child.py; its JSON figures.

    The child imports the job's module, calls the function with `kwargs` (setup: imports, paths), and
    measures only the callable the function returns: seconds, and peak RSS above the RSS just before.
    """
    command = [sys.executable, "-m", "benchmarks.child", job, json.dumps(kwargs)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {job} {kwargs} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])
