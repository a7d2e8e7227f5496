"""The committed evidence reports under the current decision rule (writes verdict.md beside each).

    python scripts/rejudge_reports.py [samples/reports]

Each folder with a results.csv and config.yaml gets `verdict.md`: the answer, the family's
Holm-adjusted intervals and decisions, and the power table, computed from the long table alone
(genaug.harness.stats.planning.rejudge). A comparison of two of them (`ce-vs-cr.md`) is redone from
their report.json files with `genaug compare`'s rule. Prints one JSON line per folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from genaug.harness.stats import planning
from genaug.harness.report.compare import compare_experiments, render
from genaug.io import write_json, write_text


def main(root: str = "samples/reports") -> None:
    root = Path(root)
    for folder in sorted(p for p in root.iterdir() if (p / "results.csv").is_file()):
        judged = planning.rejudge(folder)
        write_text(folder / "verdict.md", planning.render_verdict(judged, folder.name))
        decisions = {f"{arm} vs {ref}": comp[judged["primary_metric"]]["decision"]
                     for ref, block in judged["comparisons"].items() for arm, comp in block.items()}
        print(json.dumps({"report": folder.name, "unit": judged["unit"], "decisions": decisions}))
    if (root / "fashion-lookalike-ce").is_dir() and (root / "fashion-lookalike-cr").is_dir():
        result = compare_experiments(root / "fashion-lookalike-ce", root / "fashion-lookalike-cr")
        write_text(root / "ce-vs-cr.md", render(result))
        write_json(root / "ce-vs-cr.json", result)
        print(json.dumps({"report": "ce-vs-cr", "decisions": {a: d[result["metric"]]["decision"]
                                                              for a, d in result["arms"].items()}}))


if __name__ == "__main__":
    main(*sys.argv[1:])
