"""What an experiment is, before anything runs: its settings (`config.py`: defaults, checks, the keys
that may change on a re-run), its arms (`arms.py`: one class per arm, what it trains on and how), the
frozen spec every stage reads (`spec.py`: units, sources, stage hashes) and its random streams
(`seeds.py`). Imports nothing else of the harness."""
