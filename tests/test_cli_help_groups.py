"""`convert --help` and `bench --help` list their options under headings, each option exactly once."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from edgeml.cli import _Sections, main


def _help(command: str) -> str:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _rows(text: str) -> dict[str, list[str]]:
    """heading -> the first flag of each option row under it."""
    sections, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = sections.setdefault(line[:-1].split(" (")[0], [])
        elif current is not None and re.match(r"  -", line):
            current.append(line.split()[0].rstrip(","))
    return sections


@pytest.mark.parametrize("command, headings", [
    ("convert", ["Source", "Export", "Check", "INT8", "CoreML", "TensorRT", "Output", "Options"]),
    ("bench", ["Inputs", "Method", "Gate", "Reports", "Source models", "Options"]),
])
def test_help_shows_every_option_once_under_its_section(command, headings):
    text = _help(command)
    sections = _rows(text)
    assert [h for h in sections if h != "Usage"] == headings
    shown = [flag for flags in sections.values() for flag in flags]
    declared = [p.opts[0] for p in main.commands[command].params if isinstance(p, click.Option)] + ["-h"]
    assert sorted(shown) == sorted(declared)  # none lost, none twice
    assert sections["Options"] == ["-h"]
    listing = text[text.index(f"\n{headings[0]} ("):]  # the option rows, not the description above them
    for flag in declared:
        assert len(re.findall(rf"^  (?:-\w, )?{re.escape(flag)}(?=[ ,]|$)", listing, re.M)) == 1, flag


def test_convert_sections_hold_what_they_say():
    sections = _rows(_help("convert"))
    assert "--atol" in sections["Check"] and "--calib" in sections["INT8"] and "--trust-pickle" in sections["Source"]
    assert sections["Output"] == ["-o", "--name"]


def test_an_option_without_a_section_fails_when_the_command_is_made():
    options = [click.Option(["--a"]), click.Option(["--b"])]
    with pytest.raises(ValueError, match=r"leave out \['--b'\]"):
        _Sections("x", params=options, sections=(("A", ("--a",)),))
    with pytest.raises(ValueError, match=r"unknown options \['--c'\]"):
        _Sections("x", params=options, sections=(("A", ("--a", "--b", "--c")),))
    with pytest.raises(ValueError, match=r"list \['--a'\] twice"):
        _Sections("x", params=options, sections=(("A", ("--a", "--b")), ("B", ("--a",))))
