"""The README's settings table is generated from the code and must not drift from it."""

from __future__ import annotations

from streamrec.settings import REPO_ROOT, settings_markdown

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def readme_table() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    return text[text.index(START) + len(START) : text.index(END)].strip()


def test_readme_settings_table_matches_the_code():
    assert readme_table() == settings_markdown(), (
        "README settings table is stale: replace the block between the settings-table markers "
        "with the output of `streamrec config --markdown`"
    )
