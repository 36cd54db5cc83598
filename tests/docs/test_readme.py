"""The README stays true to the code: its settings table is the generated one."""

from __future__ import annotations

from pathlib import Path

from autoscaler.cli import build_parser
from autoscaler.settings import Settings, env_name, settings_markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"
START = "<!-- settings-table:start -->\n"
END = "<!-- settings-table:end -->"


def readme_table() -> str:
    text = README.read_text()
    return text.split(START, 1)[1].split(END, 1)[0]


def test_readme_settings_table_is_generated() -> None:
    assert readme_table() == settings_markdown_table(), (
        "README settings table is stale; run: python -m autoscaler settings --markdown"
    )


def test_every_setting_in_readme() -> None:
    table = readme_table()
    for name in Settings.model_fields:
        assert f"`{env_name(name)}`" in table


def test_readme_lists_every_command() -> None:
    text = README.read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for command in commands.choices:  # type: ignore[union-attr]
        assert f"phpfpm-autoscaler {command}" in text
