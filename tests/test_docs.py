"""The documentation stays true and self-contained: docs/settings.md is what `docs/generate_settings.py`
makes of `service.settings.Settings` now, the README stays short, every relative link in README.md and
docs/*.md reaches a file (and heading) in the repository, and none links to another site."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

import pytest
from pydantic import Field

from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 220
LOCAL_HOSTS = {"localhost", "127.0.0.1"}

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]*(?:\([^()\s]*\)[^()\s>]*)*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>]+)>")
URL = re.compile(r"https?://[^\s<>()\[\]`'\"|]+", re.IGNORECASE)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_settings", DOCS / "generate_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_code(text: str) -> tuple[str, str]:
    """(prose, code): the text with fenced blocks and code spans blanked out, and those parts alone."""
    prose_lines, code_lines, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            prose_lines.append("")
            code_lines.append(line)
        elif fenced:
            prose_lines.append("")
            code_lines.append(line)
        else:
            code_lines.extend(match.group(0) for match in CODE_SPAN.finditer(line))
            prose_lines.append(CODE_SPAN.sub(lambda match: "code", line))
    return "\n".join(prose_lines), "\n".join(code_lines)


def link_targets(text: str) -> list[str]:
    """Every markdown link's target (inline, image, reference, autolink), outside code."""
    prose, _ = split_code(text)
    found = [match.group(1) for match in INLINE_LINK.finditer(prose)]
    found += [match.group(1) for match in REFERENCE_LINK.finditer(prose)]
    found += [match.group(1) for match in AUTOLINK.finditer(prose)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a page's headings (a repeated one gets -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = None if fenced else HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Relative links of `page` that leave the repository (`root`) or reach no file or no heading."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for target in link_targets(text):
        if urlsplit(target).scheme:
            continue  # an address, not a path: see external_links
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if (
            anchor
            and resolved.suffix == ".md"
            and anchor not in anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


def external_links(text: str) -> list[str]:
    """Links and URLs to other sites. A markdown link may not be an http(s) address at all; a URL in
    prose may only name this machine (localhost, 127.0.0.1); a URL in example code may also name a
    host without a dot (a cluster service such as `http://zantara:8000`), which no other site is."""
    problems = [
        f"link {target}" for target in link_targets(text) if urlsplit(target).scheme in ("http", "https")
    ]
    prose, code = split_code(text)
    for where, part, allowed in (("prose", prose, False), ("code", code, True)):
        for url in (found.rstrip(".,;:!?") for found in URL.findall(part)):
            host = (urlsplit(url).hostname or "").lower()
            if host in LOCAL_HOSTS or (allowed and host and "." not in host):
                continue
            problems.append(f"{where} {url}")
    return problems


def test_settings_page_is_generated_from_the_settings_class() -> None:
    generator = load_generator()
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert page == generator.render(page, Settings), (
        "docs/settings.md disagrees with service/settings.py: run .venv/bin/python docs/generate_settings.py"
    )
    assert generator.MARKER in page
    assert page.index("# Settings") < page.index(generator.MARKER), "the hand-written prose comes first"


def test_the_settings_page_notices_a_changed_class() -> None:
    """A new field, a changed default or a changed description each change the generated page."""
    generator = load_generator()
    page = (DOCS / "settings.md").read_text(encoding="utf-8")

    class Added(Settings):
        brand_new_setting: int = Field(7, description="Nobody documented this yet.")

    class ChangedDefault(Settings):
        port: int = 8001

    for changed in (Added, ChangedDefault):
        assert generator.render(page, changed) != page, changed.__name__
    assert "`ZANTARA_BRAND_NEW_SETTING` | `7`" in generator.render(page, Added)


def test_settings_page_rows(tmp_path: Path) -> None:
    """One row per field; aliases, secrets and factories shown as the page promises; `--check` fails on
    a stale page and the script rewrites it, keeping the prose above the marker."""
    generator = load_generator()
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    table = page.split(generator.MARKER, 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)
    assert (
        "| `ZANTARA_MAX_CONCURRENT_REQUESTS_PER_KEY` (also `ZANTARA_MAX_STREAMS_PER_KEY`) | `16` |" in table
    )
    assert "| `ZANTARA_ADMIN_TOKEN` | (generated) |" in table
    assert "| `ZANTARA_API_KEYS` | (none) |" in table
    assert "| `ZANTARA_CANARY_STEP_WEIGHTS` | `[]` |" in table
    # never this checkout's absolute path
    assert "| `ZANTARA_FACTS_PATH` | `knowledge/data/facts.yaml` |" in table

    stale = tmp_path / "settings.md"
    shutil.copyfile(DOCS / "settings.md", stale)
    assert generator.main(["--check", "--output", str(stale)]) == 0
    stale.write_text(page.replace("| `ZANTARA_PORT` | `8000` |", "| `ZANTARA_PORT` | `8080` |"))
    assert generator.main(["--check", "--output", str(stale)]) == 1
    assert generator.main(["--output", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == page


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail into docs/"
    head = "\n".join(lines[:15])
    assert "```\nmake serve\nmake test\n```" in head, "the set-up commands CI runs must stay at the top"


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_reach_a_file(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_no_link_leaves_the_repository(page: Path) -> None:
    assert external_links(page.read_text(encoding="utf-8")) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    targets = {target.partition("#")[0] for target in link_targets(README.read_text(encoding="utf-8"))}
    assert {f"docs/{page.name}" for page in DOCS.glob("*.md")} <= targets


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The link checks themselves: each problem they exist for is reported."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "outside.md").write_text("# Outside\n")
    (root / "docs" / "other.md").write_text("# Other\n\n## Part `one`\n\n```\n# not a heading\n```\n")
    page = root / "docs" / "page.md"
    page.write_text(
        "# Title\n\n## Two words\n\n[ok](#two-words) [gone](#nowhere) [missing](missing.md) "
        "[up](../../outside.md) ![image](other.md) [part](other.md#part-one) "
        "[no part](other.md#not-a-heading)"
        "\n\n```\n[not a link](nowhere.md)\n```\n`[nor this](nowhere.md)`\n"
    )
    problems = broken_links(page, root)
    assert [problem.split(":")[0] for problem in problems] == [
        "#nowhere",
        "missing.md",
        "../../outside.md",
        "other.md#not-a-heading",
    ]

    assert "link https://example.com/x" in external_links("[site](https://example.com/x)")
    assert external_links("[local](http://localhost:8000)") == ["link http://localhost:8000"]
    assert "link https://example.com" in external_links("<https://example.com>")
    assert "link https://example.com" in external_links("[ref]: https://example.com")
    assert external_links("see https://example.com/x for more") == ["prose https://example.com/x"]
    assert external_links("run `curl https://example.org/v1`") == ["code https://example.org/v1"]
    assert external_links("```\ncurl http://10.0.0.1:8000/v1\n```") == ["code http://10.0.0.1:8000/v1"]
    assert external_links("served on http://127.0.0.1:8000 and `localhost:8000`") == []
    assert external_links("```\nzantara retrain --service http://zantara:8000\n```") == []
    assert external_links("a host in prose: http://zantara:8000") == ["prose http://zantara:8000"]

    assert slug("Gating against the serving version (`--baseline`, retrain gates)") == (
        "gating-against-the-serving-version---baseline-retrain-gates"
    )
    assert slug("`hf`: transformers + PEFT") == "hf-transformers--peft"
