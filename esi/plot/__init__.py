"""12-lead ECGs drawn on standard ECG paper (25 mm/s, 10 mm/mV) with matplotlib."""

from .captions import plot_records_with_captions
from .paper import PaperLayout, plot_ecg

__all__ = ["PaperLayout", "plot_ecg", "plot_records_with_captions"]
