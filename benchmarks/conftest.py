"""pytest options and the end-of-session report for `pytest benchmarks`.

    pytest benchmarks --quick        # every case once at its smallest size (the CI smoke test, a few minutes)
    pytest benchmarks                # the full run (manual): writes benchmarks/REPORT.md and ratios.png
    pytest benchmarks --report PATH  # write the report there instead (a --quick run writes none by default)
    pytest benchmarks/bench_load.py  # one area: prints its rows, leaves REPORT.md alone (unless --report)
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import harness

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser):
    group = parser.getgroup("clipcore benchmarks")
    group.addoption("--quick", action="store_true", default=False,
                    help="run every benchmark case once at its smallest size (smoke test)")
    group.addoption("--report", default=None, metavar="PATH",
                    help="where to write the markdown report (default: benchmarks/REPORT.md for a full run, "
                         "none for --quick); the chart goes next to it")


def pytest_configure(config):
    harness.set_quick(config.getoption("--quick"))


def report_path(config) -> Path | None:
    chosen = config.getoption("--report")
    if chosen:
        return Path(chosen)
    return HERE / "REPORT.md" if whole_suite(config) and not config.getoption("--quick") else None


def whole_suite(config) -> bool:
    """A run of every case (the benchmarks folder, no -k/-m selection): only such a run replaces REPORT.md,
    so that timing one file (`pytest benchmarks/bench_load.py`) never leaves a partial report behind."""
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return not config.option.keyword and not config.option.markexpr and all(path == HERE for path in paths)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not harness.RESULTS:
        return
    terminalreporter.section("clipcore vs reference")
    for result in harness.RESULTS:
        terminalreporter.write_line(result.line())
    below = [r.case for r in harness.RESULTS if r.meets_target is False]
    terminalreporter.write_line(f"{len(harness.RESULTS)} cases, {len(below)} below target")
    path = report_path(config)
    if path is not None:
        from benchmarks.report import write_report

        written = write_report(harness.RESULTS, path, command=" ".join(config.invocation_params.args),
                               quick=harness.quick())
        terminalreporter.write_line("report: " + ", ".join(str(p) for p in written))
