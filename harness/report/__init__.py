"""The run report: analysis (pure derivations), plots (PNG), dag (deployment graph), modify (nodes
to modify), sections + doc (the document and its markdown/HTML), render (``write_report``)."""

from harness.report.render import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report"]
