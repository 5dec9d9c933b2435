"""The documentation that docstrings point to exists: docs/method.md and its sections."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHOD = ROOT / "docs" / "method.md"
SOURCES = sorted((ROOT / "src" / "pairot").rglob("*.py"))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def method_anchors() -> set[str]:
    text = METHOD.read_text(encoding="utf-8")
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def citations() -> dict[str, list[str]]:
    found = {}
    for path in SOURCES:
        anchors = re.findall(r"docs/method\.md#([\w-]+)", path.read_text(encoding="utf-8"))
        if anchors:
            found[str(path.relative_to(ROOT))] = anchors
    return found


def test_no_citation_of_a_file_users_do_not_have():
    """Docstrings cite docs/method.md, not the project-internal METHOD file."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bMETHOD\b", line)
    ]
    assert offenders == []


def test_every_cited_section_exists():
    anchors = method_anchors()
    cited = citations()
    assert len(cited) >= 8  # the docstrings that point to the method page
    missing = {
        path: [a for a in names if a not in anchors]
        for path, names in cited.items()
        if any(a not in anchors for a in names)
    }
    assert missing == {}, f"sections not in docs/method.md: {missing}; it has {sorted(anchors)}"
    # the sections the issue asks for are there
    for section in (
        "inputs",
        "preprocessing",
        "pseudobulk-differential-expression",
        "gene-filtering",
        "label-distance",
        "cell-features-and-cost",
        "the-optimal-transport-problem",
        "outputs",
        "downsampling",
        "rank-convention",
        "how-pairot-differs-from-the-upstream-implementation",
    ):
        assert section in anchors, section


def test_anchor_rule():
    assert github_anchor("How pairot differs from the upstream implementation") == (
        "how-pairot-differs-from-the-upstream-implementation"
    )
    assert github_anchor("Cell features and cost") == "cell-features-and-cost"


def test_method_page_links_resolve():
    """The page's own [text](#anchor) links point to its sections."""
    text = METHOD.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert links
    assert links <= method_anchors(), links - method_anchors()


def test_method_page_states_the_meanings():
    """The facts the issue asked to be stated, in docs/method.md."""
    text = " ".join(METHOD.read_text(encoding="utf-8").split())
    assert "Read it down a column:** each column sums to 1" in text
    assert "Read it along a row:** each row sums to 1" in text
    assert "Every rank a user reads starts at 1" in text
    # issue 13: the gene tables replaced the name rules; the page says what they are
    assert "`pairot.pp.OFFICIAL_GENES` (`feature_name, origin`)" in text
    assert "`pairot.pp.FILTERED_GENES` (`feature_name, origin, filter_type`)" in text
    assert "**Mouse symbols and gene IDs.**" in text
