"""The hand-written pages under docs/: every CLI command they show parses, every relative link resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from clients.cli import build_parser
from tests.conftest import ROOT

PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_BASH = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)#\s]+\.md)(#[^)\s]*)?\)")


def cli_commands(page: Path) -> list[str]:
    """``nautilus-mesh ...`` lines of the page's bash blocks, comments cut, continuation lines joined."""
    commands = []
    for block in _BASH.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[-1] == "&":  # started in the background
                words = words[:-1]
            if words and Path(words[0]).name == "nautilus-mesh":
                commands.append(shlex.join(words[1:]))
    return commands


@pytest.mark.parametrize(
    "command",
    [c for page in PAGES for c in cli_commands(page)],
)
def test_cli_command_when_shown_in_docs_parses(command: str) -> None:
    args = build_parser().parse_args(shlex.split(command))
    assert args.command == "up" or callable(args.handler)


def test_docs_when_read_name_cli_commands() -> None:
    assert len(cli_commands(ROOT / "docs" / "operations.md")) >= 14


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_when_followed_name_existing_pages(page: Path) -> None:
    for target, _anchor in _LINK.findall(page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
