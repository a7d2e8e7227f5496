"""The report and its sections, written from the stages' outputs and records: `writer.py` (report.md,
report.json, headroom.md), the quality, semi-supervised and multi-label sections, figures, the
protocol text and `genaug compare`. Imports every other part of the harness but `experiment.py`."""
