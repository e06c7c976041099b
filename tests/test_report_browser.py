"""The HTML report: escaping and anchors as text, then the real page in Debian's chromium with
the network blocked: every image decodes, the contents links land, nothing is fetched."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from convlens import charts, figures
from convlens.report import Html, Section, esc, figure_html, img_tag, paragraph, pre, render_report, table_html

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, not Playwright's download (no internet here); no sandbox as root in CI; no
# background traffic that would show up as requests the report did not make.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
LOCAL = ("file:", "data:")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


# --- the HTML as text -------------------------------------------------------------------

def test_user_text_is_escaped_everywhere():
    nasty = '<script>alert("x")</script> & \'quotes\''
    page = render_report(nasty, nasty, [Section(nasty, paragraph(nasty) + table_html([nasty], [[nasty]])
                                                + pre(nasty) + img_tag(b"\x89PNG", alt=nasty))])
    assert "<script>" not in page
    # title, h1, subtitle, contents link, h2, p, th, td, pre, alt: 10 places, each escaped
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;") == 10
    assert 'alt="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;"' in page


def test_esc_leaves_helper_output_alone_and_escapes_once():
    cell = img_tag(b"png", "a < b")
    assert isinstance(cell, Html) and esc(cell) is cell
    assert esc("a < b & c") == "a &lt; b &amp; c" and esc(esc("<")) == "&lt;"
    assert "<img " in table_html(["image"], [[cell]])            # Html cells are not escaped again
    assert "&lt;img" in table_html(["text"], [[str(cell)]])      # plain str cells are
    assert '<td class="right">3</td>' in table_html(["n"], [[3]], align=["right"])
    with pytest.raises(ValueError):
        table_html(["n"], [[3]], align=["middle"])


def test_section_ids_are_unique_readable_anchors():
    page = render_report("t", "s", [Section("Confusion matrix", ""), Section("conv2", ""), Section("conv2", ""),
                                    Section("Top", ""), Section("<>", ""), Section("x", "", id="my id")])
    ids = re.findall(r'<section id="([^"]+)"', page)
    assert ids == ["confusion-matrix", "conv2", "conv2-2", "top-2", "section", "my-id"]
    assert re.findall(r'<a href="#([^"]+)">', page)[:len(ids)] == ids


def test_page_refers_to_nothing_outside_itself():
    page = render_report("t", "s", [Section("figure", figure_html(b"\x89PNG", "caption"))])
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("#", "data:")) for r in refs)
    assert "http" not in page.replace("http-equiv", "") and "<script" not in page and "<link" not in page


# --- the page in a browser --------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -r requirements.txt")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Traffic:
    """What a page asked for: every request it started, the ones that reached the network layer
    (the route, where non-local ones are aborted), why some failed, and console errors."""

    def __init__(self):
        self.requested, self.routed, self.failed, self.errors = [], [], {}, []

    def outside(self) -> list[str]:
        return [u for u in self.requested + self.routed if not u.startswith(LOCAL)]


@pytest.fixture
def open_offline(browser):
    """open(path) -> (page, Traffic), with every request that is not file: or data: aborted."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    traffic = Traffic()

    def guard(route):
        traffic.routed.append(route.request.url)
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)

    def open_(path: Path):
        page = context.new_page()
        page.on("request", lambda r: traffic.requested.append(r.url))
        page.on("requestfailed", lambda r: traffic.failed.update({r.url: r.failure}))
        page.on("console", lambda m: traffic.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: traffic.errors.append(str(e)))
        page.goto(path.as_uri(), wait_until="load")
        return page, traffic

    yield open_
    context.close()


def sample_report() -> tuple[str, list[Section]]:
    """A report like `convlens report` makes: real figures, thumbnails in a table, text."""
    rng = np.random.default_rng(0)
    x = np.zeros((28, 28))
    x[6:22, 9:19] = np.linspace(0.2, 1.0, 10)
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    res = (sliding_window_view(x, (3, 3)) * k).sum(axis=(-2, -1))                 # (26, 26)
    pooled = res.reshape(13, 2, 13, 2).max(axis=(1, 3))
    e = list(range(1, 11))
    run = {"label": "seed", "epochs": e, "loss": [0.5 * 0.8 ** i for i in e], "accuracy": [0.8 + 0.01 * i for i in e],
           "val_loss": [0.3 + 0.01 * (i - 5) ** 2 for i in e], "val_accuracy": [0.9 - 0.001 * (i - 5) ** 2 for i in e],
           "onset": 6, "best": 5}
    confusion = np.diag(rng.integers(700, 950, 10)) + rng.integers(0, 30, (10, 10))
    thumbs = table_html(["image", "true", "predicted", "p"],
                        [[img_tag(figures.png_image(rng.random((28, 28)), scale=2), f"test image {i}"),
                          CLASSES[i], CLASSES[(i + 6) % 10], f"{0.5 + i / 20:.2f}"] for i in range(4)],
                        align=["left", "left", "left", "right"])
    sections = [
        Section("Model", pre("conv64 (26×26×64)  640 = 64 × (3×3×1 + 1)\n...")
                + paragraph("Total 243,786 <params>")),
        Section("Training curves", figure_html(charts.curves([run]), "loss and accuracy per epoch")),
        Section("Confusion matrix", figure_html(charts.confusion_matrix(confusion, CLASSES), "test set")),
        Section("Misclassified", thumbs),
        Section("Convolution", figure_html(figures.convolution_lab(x, k, "vertical", res, pooled, "28×28 → 13×13",
                                                                   pixel=(10, 8), arithmetic_text="sum = 1.0"),
                                           "the vertical-edge kernel")),
        Section("Kernels", figure_html(figures.kernel_grid(rng.normal(0, 0.2, (64, 1, 3, 3)), "conv1"), "conv1")),
        Section("Feature maps", figure_html(figures.feature_map_grid(rng.random((64, 26, 26)), "conv1"), "conv1")),
        Section("Notes & <caveats>", paragraph("Escaped: <b>not bold</b>")),
    ]
    subtitle = "seed · 5 epochs · test accuracy 91.3 %"
    return render_report("convlens report: runs/seed <1>", subtitle, sections), sections


def test_report_renders_offline_in_chromium(tmp_path, open_offline):
    html, sections = sample_report()
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    page, traffic = open_offline(path)

    images = page.evaluate("() => Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) == 9
    broken = [alt for alt, complete, width in images if not (complete and width > 0)]
    assert not broken, f"images that did not decode: {broken}"

    links = page.evaluate("""() => Array.from(document.querySelectorAll('nav.toc a'),
                                              a => [a.getAttribute('href'), a.textContent])""")
    assert [t for _, t in links] == [s.title for s in sections]
    for href, _ in links:
        assert href.startswith("#") and page.evaluate("id => !!document.getElementById(id)", href[1:]), href
    page.click(f"nav.toc a[href='{links[-2][0]}']")                 # a link jumps to its section
    assert page.evaluate("location.hash") == links[-2][0]
    top = page.evaluate("id => document.getElementById(id).getBoundingClientRect().top", links[-2][0][1:])
    assert 0 <= top < 50

    assert page.title() == "convlens report: runs/seed <1>"             # escaped in HTML, text in the DOM
    assert page.locator("b").count() == 0 and page.locator("script").count() == 0
    widest = page.evaluate("() => Math.max(...Array.from(document.images, i => i.getBoundingClientRect().right))")
    assert widest <= 1200, "images must shrink to the page width"

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 2000 and pixels.std() > 10

    assert not traffic.outside(), f"the report tried to fetch: {traffic.outside()}"
    assert not traffic.failed and not traffic.errors, (traffic.failed, traffic.errors)


def test_page_policy_stops_a_smuggled_external_image(tmp_path, open_offline):
    """Even a body that links something external cannot make the page fetch it: the page's
    Content-Security-Policy stops the request inside the browser, before any network layer."""
    path = tmp_path / "smuggled.html"
    path.write_text(render_report("t", "s", [Section("x", '<img src="http://127.0.0.1:9/x.png" alt="remote">')]),
                    encoding="utf-8")
    page, traffic = open_offline(path)
    assert page.evaluate("() => document.images[0].naturalWidth") == 0
    assert traffic.failed == {"http://127.0.0.1:9/x.png": "csp"}
    assert not [u for u in traffic.routed if not u.startswith(LOCAL)], "it reached the network layer"
    assert any("Content Security Policy" in e for e in traffic.errors)


def test_a_real_runs_report_opens_offline_with_no_broken_image(tmp_path, open_offline, small_run, small_data_dir):
    """`convlens report` on a trained run: every figure decodes in chromium with the network blocked."""
    from convlens import load_dataset
    from convlens.report import write_run_report
    path = write_run_report(small_run, tmp_path / "report.html",
                            data=load_dataset("fashion-mnist", small_data_dir, val_split=0.0))
    page, traffic = open_offline(path)
    images = page.evaluate("() => Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 12
    assert not [alt for alt, ok, w in images if not (ok and w > 0)]
    assert not traffic.outside() and not traffic.errors
    shot = tmp_path / "real.png"
    page.screenshot(path=str(shot), full_page=True)
    assert np.asarray(Image.open(shot).convert("L"), dtype=np.float64).std() > 10
