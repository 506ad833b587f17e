"""The docs site renders what its Markdown says: built with mkdocs into a temporary folder (about 2 s) and read
back as HTML. Every Markdown list is a list at its depth (Python-Markdown, unlike GitHub, needs a blank line
before a list and four spaces before a nested one), every image loads, every table has its header row, every
internal link and anchor resolves."""

import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import ROOT

ITEM = re.compile(r"^( *)([-*+]|\d{1,9}[.)])( +)\S")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def markdown_list_depths(text: str) -> Counter:
    """How many list items the Markdown holds at each depth, by CommonMark's rules (what GitHub shows): an item
    nests under the one before when its marker reaches that item's text; a bullet, or an ordered item from 1, may
    start a list right after a paragraph's line."""
    depths, columns, fence, blank, paragraph = Counter(), [], False, True, False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if fence or line.lstrip().startswith(("```", "~~~")):
            blank, paragraph = False, False
            continue
        if not line.strip():
            blank = True
            continue
        m = ITEM.match(line)
        indent = len(line) - len(line.lstrip())
        starts_list = m and (columns or blank or not paragraph or m[2][:-1] == "1" or not m[2][:-1].isdigit())
        if starts_list and not (not columns and indent >= 4):
            while columns and indent < columns[-1]:
                columns.pop()
            columns.append(indent + len(m[2]) + min(len(m[3]), 4))
            depths[len(columns)] += 1
            paragraph = False
        else:
            if blank or line.lstrip().startswith(("#", "|")):
                while columns and indent < columns[-1]:
                    columns.pop()
            paragraph = not line.lstrip().startswith(("#", "|"))
        blank = False
    return depths


class Page(HTMLParser):
    """One page's article: its list items by depth, the text of its paragraphs and items, its images, tables,
    links and ids."""

    def __init__(self, html: str):
        super().__init__()
        self.open, self.in_article = [], 0
        self.depths, self.texts, self.images, self.tables, self.links, self.ids = Counter(), [], [], [], [], set()
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "article":
            self.in_article += 1
        if not self.in_article:
            return
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "table":
            self.tables.append(set())
        if tag in ("thead", "th") and self.tables:
            self.tables[-1].add(tag)
        if tag == "li":
            self.depths[sum(t in ("ul", "ol") for t in self.open)] += 1
        if tag in ("p", "li"):
            self.texts.append([tag, ""])
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag == "article":
            self.in_article -= 1
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data):
        if self.in_article and self.texts and not {"pre", "code"} & set(self.open):
            self.texts[-1][1] += data


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as mkdocs builds it (the build CI runs), in-process: {page's Markdown file: its HTML file}."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    out = tmp_path_factory.mktemp("site")
    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(out))
    build(config)
    pages = {}
    for md in sorted((ROOT / "docs").glob("*.md")):
        html = out / ("index.html" if md.stem == "index" else f"{md.stem}/index.html")
        assert html.is_file(), md.name
        pages[md] = html
    return out, pages


def test_every_markdown_list_is_a_list_at_its_depth(site):
    _, pages = site
    wrong, checked = [], 0
    for md, html in pages.items():
        page = Page(html.read_text())
        for tag, text in page.texts:  # a list's first line run into the text before it
            if re.search(r"\n *(?:[-*+]|1[.)]) +\S", text):
                wrong.append(f"{md.name}: a list runs into a <{tag}>: {text.strip()[:100]!r}")
        expected = markdown_list_depths(md.read_text())
        if page.depths != expected:
            wrong.append(f"{md.name}: list items by depth {dict(page.depths)}, the Markdown has {dict(expected)}")
        checked += sum(expected.values())
    assert not wrong, "\n".join(wrong)
    assert checked > 100  # the pages' lists were read


def test_markdown_list_depths_follow_commonmark():
    """The reference the site is compared with: GitHub's reading of the same Markdown."""
    text = ("Text:\n- a\n- b\n    - b1\n      more of b1\n  - b2\n\n1. one\n2. two\n\nyear\n2018) and\n"
            "```\n- code\n```\n| - | x |\n")
    assert markdown_list_depths(text) == Counter({1: 4, 2: 2})


def test_every_image_loads_and_every_table_has_a_header_row(site):
    _, pages = site
    images = 0
    for md, html in pages.items():
        page = Page(html.read_text())
        for src in page.images:
            assert not urlsplit(src).scheme, (md.name, src)  # the site works offline
            assert (html.parent / unquote(urlsplit(src).path)).resolve().is_file(), (md.name, src)
            images += 1
        for kinds in page.tables:
            assert kinds == {"thead", "th"}, md.name
    assert images >= 10


def test_every_internal_link_and_anchor_resolves(site):
    out, pages = site
    parsed = {p.resolve(): Page(p.read_text()) for p in out.rglob("*.html") if p.name != "404.html"}
    broken = []
    for html, page in parsed.items():
        for href in page.links:
            u = urlsplit(href)
            if u.scheme or u.netloc:
                continue
            target = (html.parent / unquote(u.path)).resolve() if u.path else html
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{html.relative_to(out)}: {href}")
            elif u.fragment and target in parsed and u.fragment not in parsed[target].ids:
                broken.append(f"{html.relative_to(out)}: {href} (no such anchor)")
    assert not broken, "\n".join(broken)
    assert len(parsed) >= len(pages)
