"""The report, written from the stages' outputs and records: what every label kind's report shares
(`judgement.py`: the units, summaries, min_effect, the declared rule's verdict, the files written),
the per-class sections (`writer.py`: report.md, report.json, headroom.md; quality and
semi-supervised sections), the per-label sections (`multilabel_report.py`), figures, the protocol
text and `genaug compare`. Imports every other part of the harness but `experiment.py`."""
