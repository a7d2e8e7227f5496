"""Simulated coverage of the interval methods the report may print (writes genaug/harness/stats/coverage.json).

python scripts/coverage_sim.py [--sims 2000] [--resamples 1999]; prints one JSON line with the table
and the wall time. The report reads the committed table (see genaug/harness/stats/coverage.py).
"""

from __future__ import annotations

import argparse
import json
import time

from genaug.harness.stats import coverage
from genaug.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1999)
    parser.add_argument("--out", default=str(coverage.TABLE))
    args = parser.parse_args()
    start = time.perf_counter()
    out = coverage.table(args.sims, args.resamples)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(args.out, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
