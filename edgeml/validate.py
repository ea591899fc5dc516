"""Output comparison: does an artifact compute what its source computes, in numbers.

For each output: max absolute and relative error, cosine similarity, and for label outputs the share of
agreeing labels (a disagreement where the reference's top two probabilities tie is counted as a tie,
not a failure). Pass/fail uses per-precision tolerances (``TOLERANCES``), which the user can override for
every output (one number) or for some outputs by name (a mapping; the others keep the precision's default).

Sequence outputs of a model with an attention mask can be compared on real tokens only (``mask_input``):
padding positions compute values nobody reads, and a quantized model may change them freely.

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
from typing import Any, Mapping, Sequence, Union

import numpy as np

from .data import largest_batch, sample_count, select_rows
from .errors import InputError
from .spec import fixed_batch

#: precision -> (atol, rtol, min label agreement): an output passes when |c - r| <= atol + rtol * |r| everywhere.
TOLERANCES = {
    "fp32": (1e-4, 1e-3, 1.0),
    "fp16": (1e-2, 1e-2, 0.99),
    "int8": (1e-1, 1e-1, 0.99),
}
#: Precisions whose atol is relative to each row's largest magnitude (at least 1): FP16 keeps 11 bits, so a
#: value's rounding error follows the size of the values it was computed from, not its own. An FP16 ImageNet
#: model's logits near 0 are off by ~0.03 when the row's largest is ~15 (cosine 0.999995).
ROW_SCALED_ATOL = frozenset({"fp16"})
#: Share of rows allowed off tolerance for scikit-learn sources: scikit-learn computes in float64, ONNX in
#: float32, so a row whose feature lies within float32 rounding of a tree split can take the other branch.
SKLEARN_ROW_ALLOWANCE = 0.02


@dataclass
class OutputCheck:
    name: str
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    min_row_cosine: float | None = None  # the lowest cosine of one sample's values (over its real tokens)
    label_agreement: float | None = None
    ties: int = 0
    top1_agreement: float | None = None
    rows_off: int = 0
    passed: bool = True
    reason: str = ""
    atol: float | None = None  # the tolerances this output was judged with
    rtol: float | None = None


@dataclass
class CheckResult:
    passed: bool
    precision: str
    atol: float  # the tolerances of every output not named in a per-output mapping (each OutputCheck has its own)
    rtol: float
    samples: int
    inputs_from: str
    outputs: list[OutputCheck] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # the shapes and dtypes compared on (data.describe_feeds)

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
        scaled = " x each row's largest |value|" if self.precision in ROW_SCALED_ATOL else ""
        tolerances = f"atol {self.atol:g}{scaled}, rtol {self.rtol:g}" + "".join(
            f"; {o.name} atol {o.atol:g}, rtol {o.rtol:g}" for o in self.outputs
            if o.atol is not None and (o.atol, o.rtol) != (self.atol, self.rtol))
        return f"check {verdict} on {self.samples} samples ({self.inputs_from}; {tolerances}): " + "; ".join(parts)


#: A tolerance as the API takes it: None (the precision's default), one number for every output, or
#: output name -> number for some outputs (the others keep the default).
Tolerance = Union[float, Mapping[str, float], None]


def check_tolerances(atol: Tolerance, rtol: Tolerance, outputs: Sequence[str] | None = None) -> None:
    """Tolerances are finite and >= 0: a NaN one would make every comparison false, so no row would fail.
    With ``outputs`` (the names a per-output mapping may use), a name that is none of them is refused."""
    for kind, value in (("atol", atol), ("rtol", rtol)):
        if value is None:
            continue
        for name, number in (value.items() if isinstance(value, Mapping) else [(None, value)]):
            if name is not None and not isinstance(name, str):
                raise InputError(f"{kind} names outputs by string, got {name!r}; give {{'output name': number}}")
            if not (isinstance(number, numbers.Real) and not isinstance(number, bool) and math.isfinite(number)
                    and number >= 0):
                what = kind if name is None else f"{kind} of {name!r}"
                raise InputError(f"tolerances must be >= 0 and finite, got {what} {number}; give a number such as 1e-4")
        unknown = [n for n in value if n not in outputs] if isinstance(value, Mapping) and outputs is not None else []
        if unknown:
            raise InputError(f"{kind} names no output {', '.join(map(repr, unknown))}; the model's outputs are "
                             f"{', '.join(outputs)}: give NAME=VALUE with one of them, or one number for all")


def tolerance_for(value: Tolerance, names: Sequence[str], default: float) -> float:
    """The tolerance of the output known by ``names`` (its reference's name, then its artifact's)."""
    if not isinstance(value, Mapping):
        return default if value is None else float(value)
    return float(next((value[n] for n in names if n in value), default))


def run_all(runtime: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run every sample, in chunks when the model's batch dimension is fixed (e.g. exported for batch 1) or
    bounded by a recorded range (``batch(1..8)``: never more than 8 a call).

    The last chunk is filled up with the first samples again and their outputs dropped, so that every
    sample is run exactly once in the result whatever the fixed batch."""
    specs = getattr(runtime, "inputs", None)
    total = sample_count(feeds, specs)
    first = fixed_batch(specs) if specs is not None else None
    largest = largest_batch(specs, getattr(runtime, "meta", None)) if specs is not None and first is None else None
    step = first if isinstance(first, int) else min(total, largest or total)
    if step == total or total == 0:
        return dict(runtime.run(dict(feeds)))
    chunks = []
    for start in range(0, total, step):
        rows = np.arange(start, start + step) % total
        out = runtime.run(select_rows(feeds, specs, rows))
        chunks.append({name: np.asarray(value)[: total - start] for name, value in out.items()})
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def compare(reference: Any, candidate: Any, inputs: Mapping[str, np.ndarray], *, precision: str = "fp32",
            atol: Tolerance = None, rtol: Tolerance = None, row_allowance: float = 0.0,
            inputs_from: str = "given", mask_input: str | None = None, classifier: bool | None = None) -> CheckResult:
    """Run both models on ``inputs`` and compare their outputs, by name where both sides use the same
    names, else in order.

    ``reference`` and ``candidate`` are Runtimes (or paths, loaded with ``edgeml.load``). ``atol``/``rtol``:
    None for the precision's default (``TOLERANCES``), a number for every output, or a mapping from output
    name (the reference's or the candidate's) to number; a name neither model has is refused before any run.
    ``row_allowance``:
    the share of rows (samples) that may be off tolerance and still pass; each check reports how many were.
    An output fails where the reference gives NaN or Inf: give inputs on which the source computes numbers.
    ``mask_input``: the attention-mask input; outputs whose dims include the mask's (matched by dim name) are
    compared where the mask is non-zero only. ``classifier``: False for models whose float outputs are not
    class scores (no top-1 agreement is reported for them); None reports it for every 2-D float output.
    """
    from .runtimes import load

    check_tolerances(atol, rtol)
    if not 0 <= row_allowance < 1:
        raise InputError(f"the row allowance is a share of rows in [0, 1), got {row_allowance}")
    if precision not in TOLERANCES:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(TOLERANCES)}")
    reference = load(reference) if isinstance(reference, (str, os.PathLike)) else reference
    candidate = load(candidate) if isinstance(candidate, (str, os.PathLike)) else candidate
    check_tolerances(atol, rtol, output_names(reference, candidate))
    masks = output_masks(reference, inputs, mask_input) if mask_input is not None else {}
    return compare_outputs(run_all(reference, inputs), run_all(candidate, inputs),
                           sample_count(inputs, getattr(reference, "inputs", None)), precision=precision, atol=atol,
                           rtol=rtol, row_allowance=row_allowance, inputs_from=inputs_from, masks=masks, classifier=classifier)


def judged_as_quantized(result: CheckResult, min_cosine: float, classifier: bool) -> CheckResult:
    """``result`` judged as the INT8 gate judges a quantized model, not by elementwise tolerances: each float
    output on its lowest sample cosine (``min_cosine``), a classifier's scores on top-1 agreement (at least
    the precision's label agreement); label outputs as compared. For artifacts whose quantization has no gate
    of its own (a compressed CoreML package, run where Core ML predicts)."""
    needed = TOLERANCES[result.precision][2]
    for output in result.outputs:
        if output.min_row_cosine is None:
            continue
        if classifier and output.top1_agreement is not None:
            output.passed = output.top1_agreement >= needed
            output.reason = "" if output.passed else f"top-1 agreement {output.top1_agreement:.2%} (need {needed:.0%})"
        else:
            output.passed = output.min_row_cosine >= min_cosine
            output.reason = "" if output.passed else (f"lowest sample cosine {output.min_row_cosine:.5f} (floor "
                                                      f"{min_cosine:g})")
    result.passed = all(output.passed for output in result.outputs)
    return result


def output_names(*models) -> list[str]:
    """Every name the outputs of ``models`` (Runtimes, or dicts of arrays) go by, each once, in order."""
    names = (getattr(m, "output_names", m) for m in models)
    return list(dict.fromkeys(n for listed in names for n in listed))


def compare_outputs(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], samples: int, *,
                    precision: str = "fp32", atol: Tolerance = None, rtol: Tolerance = None,
                    row_allowance: float = 0.0, inputs_from: str = "given", masks: Mapping | None = None,
                    classifier: bool | None = None) -> CheckResult:
    """``compare`` on outputs already computed; ``masks``: what ``output_masks`` gives."""
    check_tolerances(atol, rtol, output_names(expected, got))
    default_atol, default_rtol, min_agreement = TOLERANCES[precision]
    atol_all, rtol_all = (tolerance_for(t, (), d) for t, d in ((atol, default_atol), (rtol, default_rtol)))
    result = CheckResult(True, precision, atol_all, rtol_all, samples, inputs_from)
    if len(expected) != len(got):
        result.passed = False
        result.outputs.append(OutputCheck("outputs", passed=False, reason=f"{len(got)} output(s), the reference has {len(expected)}"))
        return result
    pairs = ([(name, name, expected[name], got[name]) for name in expected] if set(expected) == set(got)
             else [(name, other, ref, cand) for (name, ref), (other, cand) in zip(expected.items(), got.items())])
    tolerances = {name: (tolerance_for(atol, (name, other), default_atol), tolerance_for(rtol, (name, other), default_rtol))
                  for name, other, _, _ in pairs}
    scores = next(((n, np.asarray(v)) for n, v in expected.items() if np.asarray(v).dtype.kind == "f" and np.ndim(v) == 2), None)
    # labels tie where their scores are within the scores' own tolerance
    probabilities = None if scores is None else (scores[1], *tolerances.get(scores[0], (atol_all, rtol_all)))
    for name, _, ref, cand in pairs:
        check = _compare_one(name, np.asarray(ref), np.asarray(cand), *tolerances[name], min_agreement, probabilities,
                             row_allowance, (masks or {}).get(name), classifier, precision in ROW_SCALED_ATOL)
        result.outputs.append(check)
        result.passed &= check.passed
    return result


def attention_mask_input(specs, meta=None) -> str | None:
    """The input holding the attention mask: the one whose role (``ModelMeta.roles``, else its name:
    ``model_meta.infer_role``) says so."""
    from .model_meta import infer_role

    roles = getattr(meta, "roles", None) or {}
    return next((s.name for s in specs if (roles.get(s.name) or infer_role(s)) == "attention_mask"), None)


def output_masks(reference, inputs: Mapping[str, np.ndarray], mask_input: str) -> dict[str, tuple]:
    """output name -> (mask, axes): the outputs whose shape holds the mask's (batch, sequence) dims, found by
    dim name, with where they hold them. Outputs without both (a pooled embedding, logits) are not masked."""
    mask = np.asarray(inputs[mask_input]) != 0
    spec = next((s for s in reference.inputs if s.name == mask_input), None)
    if spec is None or mask.ndim != 2:
        return {}
    dims = [d if isinstance(d, str) else None for d in spec.shape]
    if None in dims:
        return {}
    found = {}
    for out in reference.outputs:
        names = [d if isinstance(d, str) else None for d in out.shape]
        if all(d in names for d in dims):
            found[out.name] = (mask, tuple(names.index(d) for d in dims))
    return found


def valid_positions(shape, mask_axes) -> np.ndarray | None:
    """A boolean array of ``shape``, True on real tokens, or None when the output is not masked."""
    if mask_axes is None:
        return None
    mask, axes = mask_axes
    if mask.shape != tuple(shape[a] for a in axes):
        return None
    order = np.argsort(axes)  # the mask's dims in the order the output holds them
    expanded = mask.transpose(order).reshape([shape[a] if a in axes else 1 for a in range(len(shape))])
    return np.broadcast_to(expanded, shape)


def row_cosines(ref: np.ndarray, cand: np.ndarray, real: np.ndarray | None = None) -> np.ndarray:
    """The cosine of each sample's values (first axis), over its real positions; 1 where both are all zero."""
    rows = len(ref)
    keep = np.ones(ref.shape, bool) if real is None else real
    r = np.where(keep, ref, 0).reshape(rows, -1).astype(np.float64)
    c = np.where(keep, cand, 0).reshape(rows, -1).astype(np.float64)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    same = np.array([np.allclose(a, b) for a, b in zip(r, c)], dtype=np.float64)
    return np.where(norms > 0, (r * c).sum(axis=1) / np.where(norms > 0, norms, 1), same)


def _compare_one(name, ref, cand, atol, rtol, min_agreement, probabilities, row_allowance, mask_axes=None,
                 classifier=None, row_scaled: bool = False) -> OutputCheck:
    """``probabilities``: (class scores, their atol, their rtol), which say where labels tie, or None.
    ``row_scaled``: atol times each row's largest magnitude, at least 1 (``ROW_SCALED_ATOL``)."""
    check = OutputCheck(name, atol=atol, rtol=rtol)
    if ref.shape != cand.shape:
        if ref.size != cand.size:
            check.passed, check.reason = False, f"shape {cand.shape}, the reference gives {ref.shape}"
            return check
        cand = cand.reshape(ref.shape)
    if ref.dtype.kind in "iubOUS" or cand.dtype.kind in "iubOUS":
        same = ref.astype(str) == cand.astype(str) if ref.dtype.kind in "OUS" else ref == cand.astype(ref.dtype)
        same = same.reshape(len(same), -1).all(axis=1) if same.ndim > 1 else same
        check.label_agreement = float(same.mean()) if same.size else 1.0
        scores, scores_atol, scores_rtol = probabilities or (None, atol, rtol)
        if scores is not None and len(scores) == len(same) and scores.shape[1] > 1:
            top2 = np.sort(scores, axis=1)[:, -2:]
            tied = (top2[:, 1] - top2[:, 0]) <= scores_atol + scores_rtol * top2[:, 1]
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
    valid = valid_positions(r.shape, mask_axes)
    real = valid if valid is not None else np.ones(r.shape, bool)
    for values, reason in ((r, "the reference gives {} NaN/Inf value(s): they cannot be compared; check on inputs "
                               "where the source computes finite outputs"),
                           (c, "the artifact gives {} NaN/Inf value(s) where the reference has numbers")):
        count = int((~np.isfinite(values) & real).sum())
        if count:
            check.passed, check.reason = False, reason.format(count)
            return check
    diff = np.where(real, np.abs(c - r), 0.0)
    check.max_abs = float(diff.max()) if diff.size else 0.0
    # Relative error where the reference is not ~0: below atol a relative error says nothing.
    significant = (np.abs(r) > atol) & real
    check.max_rel = float((diff[significant] / np.abs(r[significant])).max()) if significant.any() else 0.0
    rn, cn = r[real], c[real]
    norms = np.linalg.norm(rn) * np.linalg.norm(cn)
    check.cosine = float(rn @ cn / norms) if norms > 0 else float(np.allclose(rn, cn))
    # A sample of one value has a cosine of +-1 whatever its error: such outputs (a regression head's) are
    # judged by the cosine of the whole column instead.
    per_sample = r.ndim and len(r) and r.size // len(r) >= 2
    check.min_row_cosine = float(row_cosines(r, c, real).min()) if per_sample else check.cosine
    if r.ndim >= 2 and r.shape[-1] > 1 and (classifier or (classifier is None and r.ndim == 2)):
        # class scores on the last axis: one prediction per row (per real token for token classifiers)
        same = r.argmax(axis=-1) == c.argmax(axis=-1)
        scored = real.all(axis=-1) if valid is not None else np.ones(same.shape, bool)
        check.top1_agreement = float(same[scored].mean()) if scored.any() else 1.0
    scale = 1.0
    if row_scaled and r.ndim and r.size:
        largest = np.abs(np.where(real, r, 0)).reshape(len(r), -1).max(axis=1)
        scale = np.maximum(largest, 1.0).reshape((len(r),) + (1,) * (r.ndim - 1))
    bad = (diff > atol * scale + rtol * np.abs(r)) & real
    rows = len(bad) if bad.ndim else 1
    check.rows_off = int(bad.reshape(rows, -1).any(axis=1).sum()) if bad.size else 0
    if check.rows_off > row_allowance * rows:
        check.passed = False
        scaled = " x the row's largest |value|" if row_scaled else ""
        check.reason = (f"{check.rows_off} of {rows} rows off by more than atol {atol:g}{scaled} + rtol {rtol:g} "
                        f"(max abs {check.max_abs:.3g}, cosine {check.cosine:.6f})")
    return check
