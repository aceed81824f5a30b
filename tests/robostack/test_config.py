"""Dataclass configs <-> command-line options: help text comes from the field comments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from robostack.config import add_dataclass_arguments, field_help
from robostack.rl.sac import SACConfig


@dataclass
class Example:
    # A section comment at the field's indent is not help text.
    speed: float = 0.1  # m/s of the tcp; a comment too long for one line
                        # goes on here (comment-only lines indented deeper)
    # Next section.
    name: str = "a"  # the name
    bare: int = 3


def test_help_text_joins_continuation_lines_and_stops_at_a_section():
    helps = field_help(Example)
    assert helps["speed"] == ("m/s of the tcp; a comment too long for one line goes on here "
                              "(comment-only lines indented deeper)")
    assert helps["name"] == "the name"
    assert "bare" not in helps


def test_every_sac_option_has_help_and_none_is_cut_off():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, SACConfig, prefix="sac-")
    for action in parser._actions[1:]:
        assert action.help and not action.help.startswith("(default"), action.option_strings
    assert "(DrQ, SERL)" in parser._option_string_actions["--sac-target-encoder"].help
