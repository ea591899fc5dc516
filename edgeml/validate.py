"""Output comparison: does an artifact compute what its source computes, in numbers.

For each output: max absolute and relative error, cosine similarity, and for label outputs the share of
agreeing labels (a disagreement where the reference's top two probabilities tie is counted as a tie,
not a failure). Pass/fail uses per-precision tolerances, which the user can override.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

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


def run_all(runtime: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run every sample, in chunks when the model's batch dimension is fixed (e.g. exported for batch 1)."""
    run = runtime.run
    total = min(len(a) for a in feeds.values())
    first = runtime.inputs[0].shape[0] if getattr(runtime, "inputs", None) and runtime.inputs[0].shape else None
    step = first if isinstance(first, int) else total
    if step >= total:
        return dict(run(dict(feeds)))
    chunks = [run({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, total - total % step, step)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def compare(reference: Any, candidate: Any, inputs: Mapping[str, np.ndarray], *, precision: str = "fp32",
            atol: float | None = None, rtol: float | None = None, row_allowance: float = 0.0,
            inputs_from: str = "given") -> CheckResult:
    """Run both models on ``inputs`` and compare their outputs, in order.

    ``reference`` and ``candidate`` are Runtimes (or paths, loaded with ``edgeml.load``). ``row_allowance``:
    the share of rows (samples) that may be off tolerance and still pass; each check reports how many were.
    """
    from .runtimes import load

    reference = load(reference) if isinstance(reference, (str, os.PathLike)) else reference
    candidate = load(candidate) if isinstance(candidate, (str, os.PathLike)) else candidate
    if precision not in TOLERANCES:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(TOLERANCES)}")
    default_atol, default_rtol, min_agreement = TOLERANCES[precision]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if atol < 0 or rtol < 0 or not 0 <= row_allowance < 1:
        raise InputError(f"tolerances must be >= 0 (got atol {atol}, rtol {rtol}) and the row allowance in [0, 1)")
    expected = list(run_all(reference, inputs).items())
    got = list(run_all(candidate, inputs).values())
    samples = min(len(a) for a in inputs.values())
    result = CheckResult(True, precision, atol, rtol, samples, inputs_from)
    if len(expected) != len(got):
        result.passed = False
        result.outputs.append(OutputCheck("outputs", passed=False, reason=f"{len(got)} output(s), the reference has {len(expected)}"))
        return result
    probabilities = next((np.asarray(v) for _, v in expected if np.asarray(v).dtype.kind == "f" and np.ndim(v) == 2), None)
    for (name, ref), cand in zip(expected, got):
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
    both_nan = np.isnan(r) & np.isnan(c)
    diff = np.where(both_nan, 0.0, np.abs(c - r))
    if np.isnan(diff).any():
        check.passed, check.reason = False, "NaN where the reference has a number (or the reverse)"
        return check
    check.max_abs = float(diff.max()) if diff.size else 0.0
    # Relative error where the reference is not ~0: below atol a relative error says nothing.
    significant = np.abs(r) > atol
    check.max_rel = float((diff[significant] / np.abs(r[significant])).max()) if significant.any() else 0.0
    rn, cn = np.nan_to_num(r).ravel(), np.nan_to_num(c).ravel()
    norms = np.linalg.norm(rn) * np.linalg.norm(cn)
    check.cosine = float(rn @ cn / norms) if norms > 0 else float(np.allclose(rn, cn))
    if r.ndim == 2 and r.shape[1] > 1:
        check.top1_agreement = float((r.argmax(axis=1) == c.argmax(axis=1)).mean())
    bad = diff > atol + rtol * np.abs(np.nan_to_num(r))
    rows = len(bad) if bad.ndim else 1
    check.rows_off = int(bad.reshape(rows, -1).any(axis=1).sum()) if bad.size else 0
    if check.rows_off > row_allowance * rows:
        check.passed = False
        check.reason = (f"{check.rows_off} of {rows} rows off by more than atol {atol:g} + rtol {rtol:g} "
                        f"(max abs {check.max_abs:.3g}, cosine {check.cosine:.6f})")
    return check
