"""fortify.report: Markdown + self-contained HTML report built from a run directory's files."""

from fortify.report.build import build_report, table1_summary
from fortify.report.cvreport import build_cv_report
from fortify.report.run_files import RunData, load_run
from fortify.report.study import load_study_table

__all__ = [
    "build_report",
    "build_cv_report",
    "table1_summary",
    "load_run",
    "RunData",
    "load_study_table",
]
