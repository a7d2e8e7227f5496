"""Warnings a report gives about how its classifier runs were trained: arms whose runs did not
converge, and an experiment whose runs differ in numeric precision (`mixed_precision: native` is
bf16 on a machine with bf16 instructions and fp32 elsewhere, so a folder resumed on another machine
may hold both)."""

from __future__ import annotations


def convergence_note(r: dict) -> list[str]:
    """Arms with runs whose scored model did not fit its own training images (`converged` false)."""
    short = {name: sum(1 for run in a["runs"] if run.get("converged") is False) for name, a in r["arms"].items()}
    short = {k: v for k, v in short.items() if v}
    if not short:
        return []
    return ["**Not converged**: " + "; ".join(f"{arm} ({n} of {len(r['arms'][arm]['runs'])} runs)"
                                               for arm, n in short.items())
            + ": their scored models get fewer than 95% of their own training images right; a longer `steps` "
              "budget may change these arms' results.", ""]


def precision_note(r: dict) -> list[str]:
    """Runs of one experiment in both bf16 and fp32 (runs recorded before precision was: not counted)."""
    runs = [run for a in r["arms"].values() for run in a["runs"] if run.get("bf16") is not None]
    bf16 = sum(1 for run in runs if run["bf16"])
    if not runs or bf16 in (0, len(runs)):
        return []
    arms = sorted(name for name, a in r["arms"].items() if len({run.get("bf16") for run in a["runs"]}) > 1)
    return [f"**Mixed precision**: {bf16} of {len(runs)} classifier runs computed in bf16, the rest in fp32 "
            "(the folder ran on machines with and without bf16 instructions"
            + (f"; arms with both: {', '.join(arms)}" if arms else "")
            + "): paired differences may hold the precision's effect too (`scripts/precision_check.py` measured it).",
            ""]
