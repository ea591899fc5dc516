"""Bad inputs to the CLI, a fixed subset of the campaign (benchmarks/campaign.py) judged by its rules
(benchmarks/bad_inputs.py): the cases issue 8 names, and a few that must succeed. Each answers with the exit
code the case accepts and a one-line message, never exit 4 or a Traceback, leaves no partial files and runs
no code from a crafted file. Cases that cannot hang run in-process through click's CliRunner; those that
could (FIFOs, /dev/zero, absurd sizes) run in a subprocess under the campaign's timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("skops")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bad_inputs  # noqa: E402
import campaign  # noqa: E402

#: Slow cases the campaign covers well enough: one /dev/zero and one FIFO model file stay in the subset.
REDUNDANT = {"convert fifo.pt2", "convert devzero.pth", "convert fifo.pth", "convert devzero.skops"}
#: Cases that must pass, so that the subset also shows the rules accept a good run.
GOOD = {"bench --json", "convert --data good.npy", "convert .skops --sample good.csv",
        "convert into a folder whose edgeml.json is {}"}
CASES = [c for c in bad_inputs.cases() if (c.issue and c.id not in REDUNDANT) or c.id in GOOD]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return bad_inputs.build_fixtures(tmp_path_factory.mktemp("fixtures"))


def test_the_subset_covers_every_group_of_the_issue():
    groups = {c.group for c in CASES}
    assert {"numbers", "specs", "files", "code", "data", "onnx", "baselines", "reports", "manifest", "packages"} <= groups
    assert len(bad_inputs.cases()) >= 600 and 40 <= len(CASES) <= 60


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, fixtures, tmp_path):
    work = tmp_path / "work"
    if case.slow:
        outcome, problems = campaign.run_case(case, fixtures, work, bad_inputs.TIMEOUT_S)
    else:
        outcome, problems = bad_inputs.run_in_process(case, fixtures, work)
    assert not problems, f"{problems}\n{outcome.output[-3000:]}"
