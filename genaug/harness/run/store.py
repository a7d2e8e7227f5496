"""The experiment folder as a store of finished stages, safe to share between drivers and hosts.

Every stage has a key: a hash of its stage type, unit and parameters, every setting of the
experiment, the keys of the stages it reads and the genaug version (`stage_key`). When a stage
finishes, its outputs are written (atomically, at their readable paths under `OUT/<unit>/`) and then
its record `OUT/stages/<key>.json` (what ran, where, how long, with which resources, which upstream
keys): a stage with a record is done, on every executor and every host that sees the folder.

While a stage runs, it holds a lease `OUT/stages/<key>.lease-<n>`, kept fresh by a heartbeat; a
second driver that meets a fresh lease leaves the stage to its holder and waits for the record (or
does other stages meanwhile). A lease nobody refreshes for `LEASE_S` seconds (its process died) is
superseded by creating the next generation `-<n+1>`, exclusively: of two drivers taking over, one
wins, and no file is ever moved back. A retry of the same driver run (a Ray task whose worker died)
takes its own lease back at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

from ... import __version__
from ...io import read_json, write_json

STORE_DIR = "stages"
LEASE_S = 60.0  # a lease not refreshed for this long belongs to a process that is gone


def stage_key(stage: str, unit: str, params: list, settings_hash: str, upstream: list[str]) -> str:
    blob = json.dumps({"stage": stage, "unit": unit, "params": params, "settings": settings_hash,
                       "upstream": sorted(upstream), "genaug": __version__}, sort_keys=True)
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


class Lease:
    def __init__(self, path: Path):
        self.path, self._stop = path, threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(LEASE_S / 4):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        for path in self.path.parent.glob(f"{self.path.name.rsplit('-', 1)[0]}-*"):
            path.unlink(missing_ok=True)


def _read_lease(path: Path) -> tuple[str, float] | None:
    """A lease's text and seconds since its last heartbeat, or None once it is released."""
    try:
        return path.read_text(), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


class Store:
    def __init__(self, root: str | Path):
        self.dir = Path(root) / STORE_DIR

    def record_path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.record_path(key).exists()

    def record(self, key: str) -> dict:
        return read_json(self.record_path(key))

    def records(self) -> list[dict]:
        return [read_json(p) for p in sorted(self.dir.glob("*.json"))] if self.dir.is_dir() else []

    def finish(self, key: str, record: dict) -> None:
        """The stage's record, and a line in `log.jsonl` (appended: what computed where, in order)."""
        write_json(self.record_path(key), {"key": key, **record})
        line = json.dumps({"key": key, "label": record.get("label"), "host": socket.gethostname(), "pid": os.getpid(),
                           "adopted": bool(record.get("adopted"))})
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(line + "\n")

    def log(self) -> list[dict]:
        path = self.dir / "log.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    def _leases(self, key: str) -> list[tuple[int, Path]]:
        pattern = re.compile(re.escape(key) + r"\.lease-(\d+)$")
        found = [(int(m.group(1)), p) for p in self.dir.glob(f"{key}.lease-*") if (m := pattern.match(p.name))]
        return sorted(found)

    def holder(self, key: str) -> dict | None:
        """Who runs the stage now ({"host", "pid", "since"}), or None without a fresh lease."""
        leases = self._leases(key)
        read = _read_lease(leases[-1][1]) if leases else None
        if read is None or read[1] >= LEASE_S:
            return None  # none, released meanwhile, or stale
        host, pid, since = (read[0].split("\n")[1].split(" ") + ["?", "?", "?"])[:3]
        return {"host": host, "pid": pid, "since": since}

    def acquire(self, key: str, owner: str) -> Lease | None:
        """The stage's lease for `owner` (a driver run's id), or None while another owner's lease is fresh."""
        self.dir.mkdir(parents=True, exist_ok=True)
        leases = self._leases(key)
        if leases:
            generation, path = leases[-1]
            read = _read_lease(path)
            if read is None:
                return self.acquire(key, owner)  # released meanwhile
            holder, age = read
            if holder.split("\n", 1)[0] == owner:
                return Lease(path)  # this run's own lease (its task is being retried)
            if age < LEASE_S:
                return None
            nxt = generation + 1
        else:
            nxt = 0
        path = self.dir / f"{key}.lease-{nxt}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None  # another driver took it first
        with os.fdopen(fd, "w") as f:
            f.write(f"{owner}\n{socket.gethostname()} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        return Lease(path)
