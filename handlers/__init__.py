"""Small attachable pieces: checkpoint and resume, metrics log, sample sheets, throughput, progress, stopping."""

from handlers.checkpoint import ExactResume, output_is_finite
from handlers.images import SampleSheets
from handlers.metrics_log import MetricsLog, read_records, records_by_iteration
from handlers.report import ConsoleReport, attach_progress
from handlers.stop import GracefulStop
from handlers.throughput import Throughput

__all__ = [
    "ConsoleReport",
    "ExactResume",
    "GracefulStop",
    "MetricsLog",
    "SampleSheets",
    "Throughput",
    "attach_progress",
    "output_is_finite",
    "read_records",
    "records_by_iteration",
]
