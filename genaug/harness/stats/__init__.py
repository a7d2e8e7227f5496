"""What the numbers mean: paired statistics (`paired.py`), units and summaries (`analysis.py`), the
decision rule and its intervals (`verdict.py`), power (`power.py`), simulated interval coverage
(`coverage.py`), the headroom's reading (`ceiling.py`), `genaug plan` (`planning.py`) and number
formatting (`text.py`). Imports `design` only, of the harness."""
