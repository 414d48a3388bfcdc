"""The run report: figures and one self-contained HTML page rebuilt from a run directory."""

from labelwise.report.html import build_report

__all__ = ["build_report"]
