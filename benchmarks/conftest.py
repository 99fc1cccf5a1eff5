"""pytest options and the end-of-session report for `pytest benchmarks`.

    pytest benchmarks --quick        # every case once at its smallest size (the CI smoke test, a few minutes)
    pytest benchmarks                # the full run (manual): writes benchmarks/REPORT.md and ratios.png
    pytest benchmarks --report PATH  # write the report there instead (a --quick run writes none by default)
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
    return None if config.getoption("--quick") else HERE / "REPORT.md"


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
