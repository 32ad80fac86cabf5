"""Kernel variants: where a family picks among kernels, each choice is a `Variant` that says whether it
can run a given call (``None``) or why not (a sentence), and runs it.

`choose` takes the first variant that can run, or the one a caller forces with ``variant=`` on the core
call (a `ValueError` with the reason when it cannot run), and logs the choice with every rejected
variant's reason when ``GPUOPS_LOG=1``, so a test or a user can see, and pin, which kernel ran.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable

#: GPUOPS_LOG=1 prints each choice to stderr
LOG = os.environ.get("GPUOPS_LOG", "") not in ("", "0")


@dataclasses.dataclass(frozen=True)
class Variant:
    """``can_run(call) -> None | str`` and ``run(call)`` over one call's values (a family's own object)."""

    name: str
    can_run: Callable
    run: Callable


def choose(op: str, variants: tuple, call, forced=None) -> Variant:
    """Run ``call`` with the first of ``variants`` that can run it (or the ``forced`` one); returns it."""
    if forced is None and not LOG:      # the common case, on the small-call host path: nothing to keep
        for chosen in variants:
            if chosen.can_run(call) is None:
                chosen.run(call)
                return chosen
    if forced is not None:
        chosen = next((v for v in variants if v.name == forced), None)
        if chosen is None:
            raise ValueError(f"variant must be one of {[v.name for v in variants]} for {op}, got {forced!r}")
        why = chosen.can_run(call)
        if why is not None:
            raise ValueError(f"{op}: variant {forced!r} cannot run this call: {why}")
        rejected = ()
    else:
        rejected = []
        for chosen in variants:
            why = chosen.can_run(call)
            if why is None:
                break
            rejected.append((chosen.name, why))
        else:
            raise AssertionError(f"{op}: no variant can run this call: {rejected}")     # the last one always can
    if LOG:
        skipped = "; ".join(f"not {name}: {why}" for name, why in rejected)
        print(f"gpuops: {op}: {chosen.name}" + (f" ({skipped})" if skipped else ""), file=sys.stderr)
    chosen.run(call)
    return chosen


def names(variants: tuple) -> tuple:
    return tuple(v.name for v in variants)
