"""The experiment harness, in the order data flows through it: `design` (what an experiment is) <
`stats` (what the numbers mean) < `stages` (the stage functions) < `run` (how stages run) < `report`
< `experiment.py` (the driver). `tests/test_architecture.py` holds each part to that order."""
