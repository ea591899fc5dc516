"""Output comparison: does an artifact compute what its source computes, in numbers.

For each output: max absolute and relative error, cosine similarity, and for label outputs the share of
agreeing labels (a disagreement where the reference's top two probabilities tie is counted as a tie,
not a failure). Pass/fail uses per-precision tolerances, which the user can override.

Outputs are paired by name when both models name them alike, else by position. Every sample is run,
also when a fixed batch does not divide their number. A check never passes on values it cannot
compare: an output where the reference computes NaN or Inf fails (NaN == NaN says nothing of the
candidate), as does one where the candidate does and the reference does not.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from .data import sample_count
from .errors import InputError

#: precision -> (atol, rtol, min label agreement): an output passes when |c - r| <= atol + rtol * |r| everywhere.
TOLERANCES = {
    "fp32": (1e-4, 1e-3, 1.0),
    "fp16": (1e-2, 1e-2, 0.99),
    "int8": (1e-1, 1e-1, 0.99),
}
#: Share of rows allowed off tolerance for scikit-learn sources: scikit-learn computes in float64, ONNX in
#: float32, so a row whose feature lies within float32 rounding of a tree split can take the other branch.
SKLEARN_ROW_ALLOWANCE = 0.02


@dataclass
class OutputCheck:
    name: str
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    label_agreement: float | None = None
    ties: int = 0
    top1_agreement: float | None = None
    rows_off: int = 0
    passed: bool = True
    reason: str = ""


@dataclass
class CheckResult:
    passed: bool
    precision: str
    atol: float
    rtol: float
    samples: int
    inputs_from: str
    outputs: list[OutputCheck] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for a terminal or a CI log."""
        parts = []
        for o in self.outputs:
            if o.label_agreement is not None:
                ties = f", {o.ties} tie(s)" if o.ties else ""
                parts.append(f"{o.name}: labels agree {o.label_agreement:.2%}{ties}")
            elif o.max_abs is not None:
                parts.append(f"{o.name}: max abs {o.max_abs:.2e}, max rel {o.max_rel:.2e}, cosine {o.cosine:.6f}")
                if o.top1_agreement is not None:
                    parts[-1] += f", top-1 agree {o.top1_agreement:.2%}"
            if o.rows_off and o.passed:
                parts[-1] += f" ({o.rows_off} row(s) off, within the allowance)"
            if o.reason:
                parts[-1:] = [f"{o.name}: {o.reason}"]
        verdict = "passed" if self.passed else "FAILED"
        return f"check {verdict} on {self.samples} samples ({self.inputs_from}; atol {self.atol:g}, rtol {self.rtol:g}): " + "; ".join(parts)


def check_tolerances(atol: float | None, rtol: float | None) -> None:
    """Tolerances are finite and >= 0: a NaN one would make every comparison false, so no row would fail."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise InputError(f"tolerances must be >= 0 and finite, got {name} {value}; give a number such as 1e-4")


def run_all(runtime: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run every sample, in chunks when the model's batch dimension is fixed (e.g. exported for batch 1).

    The last chunk is filled up with the first samples again and their outputs dropped, so that every
    sample is run exactly once in the result whatever the fixed batch."""
    total = sample_count(feeds)
    first = runtime.inputs[0].shape[0] if getattr(runtime, "inputs", None) and runtime.inputs[0].shape else None
    step = first if isinstance(first, int) else total
    if step == total or total == 0:
        return dict(runtime.run(dict(feeds)))
    chunks = []
    for start in range(0, total, step):
        rows = np.arange(start, start + step) % total
        out = runtime.run({k: v[rows] for k, v in feeds.items()})
        chunks.append({name: np.asarray(value)[: total - start] for name, value in out.items()})
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def compare(reference: Any, candidate: Any, inputs: Mapping[str, np.ndarray], *, precision: str = "fp32",
            atol: float | None = None, rtol: float | None = None, row_allowance: float = 0.0,
            inputs_from: str = "given") -> CheckResult:
    """Run both models on ``inputs`` and compare their outputs, by name where both sides use the same
    names, else in order.

    ``reference`` and ``candidate`` are Runtimes (or paths, loaded with ``edgeml.load``). ``row_allowance``:
    the share of rows (samples) that may be off tolerance and still pass; each check reports how many were.
    An output fails where the reference gives NaN or Inf: give inputs on which the source computes numbers.
    """
    from .runtimes import load

    check_tolerances(atol, rtol)
    if not 0 <= row_allowance < 1:
        raise InputError(f"the row allowance is a share of rows in [0, 1), got {row_allowance}")
    if precision not in TOLERANCES:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(TOLERANCES)}")
    reference = load(reference) if isinstance(reference, (str, os.PathLike)) else reference
    candidate = load(candidate) if isinstance(candidate, (str, os.PathLike)) else candidate
    default_atol, default_rtol, min_agreement = TOLERANCES[precision]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    expected = run_all(reference, inputs)
    got = run_all(candidate, inputs)
    samples = sample_count(inputs)
    result = CheckResult(True, precision, atol, rtol, samples, inputs_from)
    if len(expected) != len(got):
        result.passed = False
        result.outputs.append(OutputCheck("outputs", passed=False, reason=f"{len(got)} output(s), the reference has {len(expected)}"))
        return result
    pairs = ([(name, expected[name], got[name]) for name in expected] if set(expected) == set(got)
             else [(name, ref, cand) for (name, ref), cand in zip(expected.items(), got.values())])
    probabilities = next((np.asarray(v) for v in expected.values() if np.asarray(v).dtype.kind == "f" and np.ndim(v) == 2), None)
    for name, ref, cand in pairs:
        check = _compare_one(name, np.asarray(ref), np.asarray(cand), atol, rtol, min_agreement, probabilities, row_allowance)
        result.outputs.append(check)
        result.passed &= check.passed
    return result


def _compare_one(name, ref, cand, atol, rtol, min_agreement, probabilities, row_allowance) -> OutputCheck:
    check = OutputCheck(name)
    if ref.shape != cand.shape:
        if ref.size != cand.size:
            check.passed, check.reason = False, f"shape {cand.shape}, the reference gives {ref.shape}"
            return check
        cand = cand.reshape(ref.shape)
    if ref.dtype.kind in "iubOUS" or cand.dtype.kind in "iubOUS":
        same = ref.astype(str) == cand.astype(str) if ref.dtype.kind in "OUS" else ref == cand.astype(ref.dtype)
        same = same.reshape(len(same), -1).all(axis=1) if same.ndim > 1 else same
        check.label_agreement = float(same.mean()) if same.size else 1.0
        if probabilities is not None and len(probabilities) == len(same) and probabilities.shape[1] > 1:
            top2 = np.sort(probabilities, axis=1)[:, -2:]
            tied = (top2[:, 1] - top2[:, 0]) <= atol + rtol * top2[:, 1]
            check.ties = int((~same & tied).sum())
        check.rows_off = int((~same).sum()) - check.ties
        decisive = (len(same) - check.ties) or 1
        needed = min_agreement - row_allowance
        check.passed = 1 - check.rows_off / decisive >= needed
        if not check.passed:
            check.reason = f"labels agree on {check.label_agreement:.2%} (need {needed:.0%} outside ties)"
        return check
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    for values, reason in ((r, "the reference gives {} NaN/Inf value(s): they cannot be compared; check on inputs "
                               "where the source computes finite outputs"),
                           (c, "the artifact gives {} NaN/Inf value(s) where the reference has numbers")):
        count = int((~np.isfinite(values)).sum())
        if count:
            check.passed, check.reason = False, reason.format(count)
            return check
    diff = np.abs(c - r)
    check.max_abs = float(diff.max()) if diff.size else 0.0
    # Relative error where the reference is not ~0: below atol a relative error says nothing.
    significant = np.abs(r) > atol
    check.max_rel = float((diff[significant] / np.abs(r[significant])).max()) if significant.any() else 0.0
    rn, cn = r.ravel(), c.ravel()
    norms = np.linalg.norm(rn) * np.linalg.norm(cn)
    check.cosine = float(rn @ cn / norms) if norms > 0 else float(np.allclose(rn, cn))
    if r.ndim == 2 and r.shape[1] > 1:
        check.top1_agreement = float((r.argmax(axis=1) == c.argmax(axis=1)).mean())
    bad = diff > atol + rtol * np.abs(r)
    rows = len(bad) if bad.ndim else 1
    check.rows_off = int(bad.reshape(rows, -1).any(axis=1).sum()) if bad.size else 0
    if check.rows_off > row_allowance * rows:
        check.passed = False
        check.reason = (f"{check.rows_off} of {rows} rows off by more than atol {atol:g} + rtol {rtol:g} "
                        f"(max abs {check.max_abs:.3g}, cosine {check.cosine:.6f})")
    return check
