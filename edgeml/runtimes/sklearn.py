"""scikit-learn backend: a fitted estimator behind the Runtime contract.

It is the reference that converted scikit-learn models are checked against, with the output layout
skl2onnx gives them (``label`` and ``probabilities`` for classifiers, ``variable`` otherwise).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import InputError, first_line, require
from ..spec import TensorSpec
from .base import LABEL_OUTPUT_KEY, PROBA_OUTPUT_KEY, Runtime


def is_classifier(estimator: Any) -> bool:
    return hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")


def output_specs(estimator: Any) -> list[TensorSpec]:
    if is_classifier(estimator):
        classes = np.asarray(estimator.classes_)
        label_dtype = "str" if classes.dtype.kind in "OUS" else "int64"
        return [TensorSpec("label", ("batch",), label_dtype),
                TensorSpec("probabilities", ("batch", len(classes)), "float32")]
    return [TensorSpec("variable", ("batch", "?"), "float32")]


class SklearnRuntime(Runtime):
    backend = "sklearn"
    tools = ("scikit-learn",)

    def __init__(self, estimator: Any, inputs: list[TensorSpec], columns: bool = False, path: str | None = None):
        """``columns``: the estimator was fitted on a DataFrame and each input is one of its columns."""
        require("sklearn", "sklearn")
        self.estimator = estimator
        metadata = {LABEL_OUTPUT_KEY: "label", PROBA_OUTPUT_KEY: "probabilities"} if is_classifier(estimator) else {}
        super().__init__(inputs, output_specs(estimator), metadata, device="cpu", path=path)
        self._columns = columns

    def _frame(self, feeds: dict[str, np.ndarray]):
        """Column inputs back into the DataFrame the estimator was fitted on ('' is a missing string)."""
        pd = require("pandas", "sklearn")
        data = {}
        for spec in self.inputs:
            column = feeds[spec.name].reshape(-1)
            if spec.dtype == "str":
                column = pd.Series(column, dtype=object).replace("", np.nan)
            elif column.dtype == np.float32:
                column = column.astype(np.float64)  # see _run
            data[spec.name] = column
        return pd.DataFrame(data)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # Float inputs reach scikit-learn as float64 (the same values): it then computes as it does on a
        # usual DataFrame or array, in double, which the converted graph reproduces (scalers divide in
        # double, forests run in double). Given float32, scikit-learn would round between steps instead.
        X = self._frame(feeds) if self._columns else feeds[self.inputs[0].name]
        if not self._columns and X.dtype == np.float32:
            X = X.astype(np.float64)
        with warnings.catch_warnings():  # "X does not have valid feature names": the array is in fitting order
            warnings.simplefilter("ignore", UserWarning)
            try:
                return self._predict(X)
            except Exception as exc:  # noqa: BLE001 - e.g. NaN in the input, an unknown category
                raise InputError(f"scikit-learn could not run {self.what} ({type(self.estimator).__name__}) on these "
                                 f"inputs ({type(exc).__name__}: {first_line(exc)})") from exc

    def _predict(self, X) -> list[np.ndarray]:
        est = self.estimator
        if is_classifier(est):
            return [np.asarray(est.predict(X)), np.asarray(est.predict_proba(X), dtype=np.float32)]
        method = est.predict if hasattr(est, "predict") else est.transform
        result = np.asarray(method(X))
        if hasattr(result, "toarray"):
            result = result.toarray()
        return [result.reshape(len(result), -1).astype(np.float32)]
