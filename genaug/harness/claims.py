"""Several processes may run one experiment folder together (one per GPU, or per machine sharing the
folder): before a process works on a unit (a replicate, or a replicate's fold) it claims it with a
lock file created exclusively, so no stage is computed twice; the others move on to the next
unclaimed unit, and whichever finishes the last unit writes the report.

A claim whose process has died on this host is taken over. A claim from another host cannot be
checked from here: the message names its file, to be removed by hand once that process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

CLAIM_NAME = ".claimed.json"
UNWRITTEN = {"pid": None, "host": None, "since": None}  # a claim file created but not (yet) written


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):  # caught between creation and its first write
        return dict(UNWRITTEN)


class Claim:
    """The exclusive claim of one unit's folder by this process."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / CLAIM_NAME
        self.held = False

    def acquire(self) -> dict | None:
        """Claim the unit. Returns None when this process holds it now, else the holder's record
        (pid, host, since)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if holder is None:
                    continue  # released meanwhile
                if not self._stale(holder) or not self._take_over(holder):
                    return holder
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
            self.held = True
            return None
        return _read(self.path) or dict(UNWRITTEN)

    def _stale(self, holder: dict) -> bool:
        if holder.get("pid") is None:  # never written: its process died at once, or is writing it now
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return False
        return holder.get("host") == socket.gethostname() and not _alive(int(holder["pid"]))

    def _take_over(self, stale: dict) -> bool:
        """Move the dead process's claim aside (rename is atomic); if what was moved is not that
        claim (another process took the unit over in between), put it back."""
        aside = self.path.with_name(f"{CLAIM_NAME}.{os.getpid()}.stale")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True
        if _read(aside) == stale:
            aside.unlink(missing_ok=True)
            return True
        os.replace(aside, self.path)
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def describe(folder: Path, holder: dict) -> str:
    """One line: who holds a unit, and what to do if that process is gone."""
    who = f"process {holder.get('pid')} on {holder.get('host')}" if holder.get("pid") else "another process"
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"{folder} is being run by {who}{since} (if that process is gone, delete {Path(folder) / CLAIM_NAME})"
