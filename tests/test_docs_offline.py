"""The built documentation site works offline, in a real browser (``-m docs``, after the build).

Run after ``python -m sphinx -W -b html docs docs/_build/html`` (``.ci/run`` does both)::

    python -m pytest -m docs tests/test_docs_offline.py

Headless Chromium (Debian's ``chromium`` package) opens pages from ``file://`` with every
network request sent to a closed port and every host name unresolvable, lets their scripts run,
and dumps the DOM: MathJax, shipped in ``_static/mathjax``, must have typeset every formula.  The
site itself is checked too: no page loads anything from the network, every internal link
resolves, figures are at least 150 dpi, each tutorial ran in under 30 s.  The site is looked
for in ``docs/_build/html`` or ``$GRAPHM_DOCS_SITE``; a missing site or browser is a failure,
not a skip.
"""
import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import pytest

pytestmark = pytest.mark.docs

REPO = pathlib.Path(__file__).resolve().parent.parent
SITE = pathlib.Path(os.environ.get("GRAPHM_DOCS_SITE", REPO / "docs" / "_build" / "html"))
# Pages with math in their text, headings and tables: the concepts page and a tutorial.
MATH_PAGES = ["concepts.html", "getting_started.html",
              "auto_tutorials/plot_04_forward_and_reverse_mode.html"]
TUTORIAL_TIME_LIMIT_SECONDS = 30
MIN_FIGURE_DPI = 150


@pytest.fixture(scope="module")
def site():
    assert (SITE / "index.html").is_file(), (
        f"no built site in {SITE}: build it first with "
        "python -m sphinx -W -b html docs docs/_build/html")
    return SITE


@pytest.fixture(scope="module")
def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Chromium on PATH: apt-get install chromium")


def browse(chromium, url, tmp_path, *extra):
    """The DOM of ``url`` after its scripts ran, in a headless browser with no network."""
    command = [chromium, "--headless", "--disable-gpu", "--no-sandbox",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
               # no network: every proxied request goes to a closed port, no name resolves
               "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--window-size=1920,1080", "--virtual-time-budget=30000", *extra,
               "--dump-dom", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "<html" in result.stdout, (
        f"chromium failed on {url} (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


class VisibleText(html.parser.HTMLParser):
    """The text a reader sees: without scripts, styles and MathJax's hidden MathML copy."""

    HIDDEN = {"script", "style", "mjx-assistive-mml", "template", "noscript"}

    def __init__(self):
        super().__init__()
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


@pytest.mark.parametrize("page", MATH_PAGES)
def test_math_renders_offline(site, chromium, tmp_path, page):
    source = (site / page).read_text(encoding="utf-8")
    formulas = len(re.findall(r'class="math notranslate nohighlight"', source))
    assert formulas > 0, f"{page} has no math to check"
    assert "_static/mathjax/tex-chtml.js" in source, f"{page} does not load the shipped MathJax"

    dom = browse(chromium, (site / page).as_uri(), tmp_path)
    rendered = dom.count("<mjx-container")
    assert rendered >= formulas, (
        f"{page}: MathJax typeset {rendered} of its {formulas} formulas offline")
    assert "<mjx-merror" not in dom, f"{page}: MathJax reported a TeX error"
    parser = VisibleText()
    parser.feed(dom)
    text = "".join(parser.parts)
    for raw in ("\\(", "\\[", "\\frac", "\\mathbb"):
        at = text.find(raw)
        assert at < 0, f"{page}: raw TeX {raw!r} left in the visible text: ...{text[at-80:at+80]}..."


def test_wide_column_and_no_empty_sidebar(site, chromium, tmp_path):
    # A copy of the page, beside it, with a script that writes what it measures into the DOM.
    probe = site / "_width_probe.html"
    script = """<script>window.addEventListener("load", () => {
      const width = (s) => { const e = document.querySelector(s); return e ? e.offsetWidth : 0; };
      document.body.dataset.probe = JSON.stringify({
        article: width(".bd-article-container"), sidebar: width(".bd-sidebar-primary")});
    });</script></body>"""
    probe.write_text((site / "concepts.html").read_text(encoding="utf-8")
                     .replace("</body>", script), encoding="utf-8")
    try:
        dom = browse(chromium, probe.as_uri(), tmp_path)
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the width probe did not run"
    widths = json.loads(html.parser.unescape(found.group(1)))
    print(f"concepts.html at 1920 px: {widths}")
    assert widths["article"] >= 1100, f"text column {widths['article']} px wide on a 1920 px screen"
    assert widths["sidebar"] == 0, "concepts.html shows an (empty) left sidebar"


def test_no_page_loads_anything_from_the_network(site):
    remote = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"')
    offenders = {}
    for page in site.rglob("*.html"):
        if page.parent.name == "_static":
            continue                      # the theme's template macros, not a page
        found = [tag for tag in remote.findall(page.read_text(encoding="utf-8"))
                 if 'rel="canonical"' not in tag]
        if found:
            offenders[str(page.relative_to(site))] = found[:3]
    assert not offenders, f"pages that load from the network: {offenders}"


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def test_internal_links_resolve(site):
    pages = {}
    for page in site.rglob("*.html"):
        if page.parent.name != "_static":
            parser = Links()
            parser.feed(page.read_text(encoding="utf-8"))
            pages[page.resolve()] = parser
    broken = []
    for page, parser in pages.items():
        for href in parser.links:
            url = urllib.parse.urlparse(href)
            if url.scheme or href.startswith("//"):
                continue
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(site.resolve())}: {href} (no such file)")
            elif url.fragment and target in pages and url.fragment not in pages[target].ids:
                broken.append(f"{page.relative_to(site.resolve())}: {href} (no such anchor)")
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken)


def test_figures_are_at_least_150_dpi(site):
    from PIL import Image

    figures = [p for p in (site / "_images").glob("sphx_glr_plot_*.png") if "thumb" not in p.name]
    assert figures, "no tutorial figures in the site"
    low = {}
    for figure in figures:
        with Image.open(figure) as image:
            dpi = image.info.get("dpi", (72, 72))[0]
        if dpi < MIN_FIGURE_DPI - 0.5:
            low[figure.name] = round(dpi)
    assert not low, f"figures below {MIN_FIGURE_DPI} dpi: {low}"


def test_each_tutorial_records_its_run_time_under_30_s(site):
    times_page = site / "auto_tutorials" / "sg_execution_times.html"
    assert times_page.is_file(), "the run-time page was not built"
    assert "sg_execution_times.html" in (site / "auto_tutorials" / "index.html").read_text(
        encoding="utf-8"), "the gallery's index does not link to the run-time page"
    # One table row per tutorial: its file name, then its run time as mm:ss.sss.
    rows = re.findall(r'<span class="pre">(plot_\w+)\.py</span></code>\)</p></td>\s*'
                      r"<td><p>(\d+):([\d.]+)</p></td>", times_page.read_text(encoding="utf-8"))
    times = {name: 60 * int(minutes) + float(seconds) for name, minutes, seconds in rows}
    tutorials = sorted(p.stem for p in (REPO / "tutorials").glob("plot_*.py"))
    assert sorted(times) == tutorials, f"run times recorded for {sorted(times)}, not {tutorials}"
    print("tutorial run times (s):", {name: round(t, 1) for name, t in times.items()})
    slow = {name: t for name, t in times.items() if t >= TUTORIAL_TIME_LIMIT_SECONDS}
    assert not slow, f"tutorials that took {TUTORIAL_TIME_LIMIT_SECONDS} s or more: {slow}"
