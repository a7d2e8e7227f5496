"""How stages run: the task graph and one task's execution (`plan.py`), the store of keys, records and
leases (`store.py`), the in-process and Ray executors, `genaug status` (`progress.py`), `genaug pack`
(`pack.py`) and the time table (`timing.py`). Imports `design`, `stats` and `stages`."""
