"""Every relative link of README.md and docs/*.md names a file that exists and, with a
``#fragment``, a heading of that file (GitHub's anchors: lower case, punctuation dropped,
spaces as hyphens)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
LINK = re.compile(r'\]\(([^)\s]+)\)')


def anchor(heading: str) -> str:
    text = heading.strip().lower().replace('`', '')
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {anchor(line.lstrip('#')) for line in lines if re.match(r'#{1,6} ', line)}


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(path.read_text())
            if not re.match(r'[a-z]+://', target)]


@pytest.mark.parametrize('document', DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_resolve(document):
    for target in relative_links(document):
        file_part, _, fragment = target.partition('#')
        linked = (document.parent / file_part).resolve() if file_part else document
        assert linked.exists(), f'{document.name}: {target} (no such file)'
        if fragment:
            assert fragment in anchors(linked), f'{document.name}: {target} (no such heading)'


def test_anchor_follows_github():
    assert anchor('table1d: focal loss vs CE with 1:3 mining vs OHEM') == \
        'table1d-focal-loss-vs-ce-with-13-mining-vs-ohem'
    assert anchor('The same comparison at 1,200 steps') == 'the-same-comparison-at-1200-steps'
