"""The explorer in a real browser (Debian's chromium through Playwright) against a real `convlens serve`:
train from the page and watch it finish, open the confusion matrix, click a cell, inspect an image,
upload a PNG, draw on the canvas, hover a feature-map pixel and read its arithmetic, check the maps,
click a filter and open one of its top crops; a screenshot of every view, each checked for content."""

import io
import re
import shutil

import numpy as np
import pytest
from conftest import serving
from PIL import Image
from test_report_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_run, small_data_dir):
    runs = tmp_path_factory.mktemp("web") / "runs"
    shutil.copytree(small_run.path, runs / "small")
    with serving(runs, "--data-dir", small_data_dir) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1300, "height": 950})
        pg.errors, pg.console = [], []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.on("console", lambda m: pg.console.append(m.text) if m.type == "error" else None)
        pg.outside = []
        pg.on("request", lambda r: None if r.url.startswith(server) or r.url.startswith("data:") or r.url.startswith("blob:")
              else pg.outside.append(r.url))
        pg.goto(server + "/")
        pg.wait_for_selector("body[data-ready='1']", timeout=30000)
        yield pg
        browser.close()


def has_content(png: bytes, min_std: float = 8.0) -> bool:
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return img.size > 10000 and img.std() > min_std


def shot(page, tmp_path, name: str) -> bytes:
    png = page.screenshot(path=str(tmp_path / f"{name}.png"))
    assert has_content(png), name
    return png


def test_the_explorer_end_to_end(page, tmp_path):
    shot(page, tmp_path, "runs")
    assert page.locator("#runs-table tbody tr").count() == 1

    # Train from the page: the spec shows its shapes as it is typed, a bad token is pointed at.
    page.click("nav button[data-tab=train]")
    page.fill("#spec", "conv8-pool-dense")
    page.wait_for_function("document.querySelector('#spec-error').textContent.includes('token 3')")
    assert page.locator("#start-training").is_disabled()
    page.fill("#spec", "conv8-pool-flatten-dense10")
    page.wait_for_function("document.querySelector('#spec-total').textContent.includes('13,610 parameters')")  # 80 + 8·13·13·10 + 10
    page.fill("#epochs", "2")
    page.fill("#run-name", "from-the-page")
    page.click("#start-training")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('running')", timeout=30000)
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('finished')", timeout=180000)
    status = page.text_content("#job-status")
    assert re.search(r"test accuracy \d+\.\d+ %", status), status
    assert page.evaluate("document.querySelector('#train-progress').value") == 1
    shot(page, tmp_path, "train")
    assert "from-the-page" in page.locator("#run-select option").all_text_contents()

    page.click("nav button[data-tab=model]")
    page.wait_for_selector("#diagram .block")
    assert page.locator("#diagram .block").count() == 5                 # input + 4 layers
    shot(page, tmp_path, "model")

    # The confusion matrix: a cell with mistakes opens its images; an image opens in Inspect.
    page.select_option("#run-select", "small")
    page.click("nav button[data-tab=evaluate]")
    page.wait_for_selector("#confusion td")
    counts = [[int(td.text_content()) for td in row.locator("td").all()] for row in page.locator("#confusion tr").all()[1:]]
    cm = np.array(counts)
    assert cm.shape == (10, 10) and cm.sum() == 1000
    t, p = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm))), cm.shape)
    page.click(f"#confusion td[data-true='{t}'][data-pred='{p}']")
    page.wait_for_selector("#cell-gallery figure")
    assert page.locator("#cell-gallery figure").count() == min(60, cm[t, p])
    page.locator("#cell-gallery img").first.scroll_into_view_if_needed()     # mistakes load with their reasons
    page.wait_for_function("document.querySelector('#cell-gallery img').naturalWidth == 3 * (3 * 28 + 2)")
    shot(page, tmp_path, "evaluate")
    first = int(page.locator("#cell-gallery figure").first.get_attribute("data-index"))
    page.locator("#cell-gallery figure").first.click()
    page.wait_for_function(f"document.querySelector('#inspect-label').textContent.includes('test image {first}')")
    page.wait_for_selector("#layers canvas.conv")
    assert page.locator("#layers .layer").count() == 7
    assert page.locator("#layers canvas[data-layer=conv2d_1]").count() == 64
    assert len(page.locator("#topk .bar").all()) == 5

    # Hover a feature-map pixel: the arithmetic with the real numbers, and the receptive patch.
    cv = page.locator("#layers canvas[data-layer=conv2d_1]").nth(6)
    cv.scroll_into_view_if_needed()
    box = cv.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 13.5 / 26, box["y"] + box["height"] * 10.5 / 26)
    page.wait_for_function("document.querySelector('#arith').textContent.includes('Σ pixel × weight')")
    text = page.text_content("#arith")
    assert "conv2d_1, filter 6, output pixel (10, 13)" in text and "rows 10–12, columns 13–15" in text
    total, bias, pre = (float(v) for v in re.search(
        r"Σ pixel × weight = (-?\d+\.\d+)\s+\+ bias (-?\d+\.\d+) = (-?\d+\.\d+)", text).groups())
    assert abs(total + bias - pre) < 2e-4
    products = [float(td.text_content()) for td in page.locator("#arith table").nth(2).locator("td").all()]
    assert len(products) == 9 and abs(sum(products) - total) < 5e-3
    shot(page, tmp_path, "inspect")

    # Can these maps be trusted? The check's strip and a verdict per map, the edge control failing.
    page.click("#check-maps")
    page.wait_for_function("document.querySelector('#check-verdicts').textContent.includes('do not trust')",
                           timeout=120000)
    page.wait_for_function("['#check-strip', '#methods-view', '#deletion-view'].every(s => "
                           "document.querySelector(s).complete && document.querySelector(s).naturalWidth > 600)")
    rows = page.locator("#check-verdicts tr[data-method]")
    assert rows.count() == 7 and "edge detector (control)" in rows.last.text_content()
    assert page.locator("#check-verdicts td.tier0").count() >= 1          # a map that depends on the weights
    assert page.locator("#deletion-scores tr").count() == 7
    shot(page, tmp_path, "check")

    # What filter 6 of conv2d_1 looks for: its top 9 test crops; one opens its image in Inspect.
    page.locator("#layers canvas[data-layer=conv2d_1]").nth(6).click()
    page.wait_for_selector("#filter-crops figure")
    assert page.locator("#filter-crops figure").count() == 9
    assert "What filter 6 of conv2d_1 looks for" in page.text_content("#filter-title")
    assert "best test crop" in page.text_content("#filter-optimised-caption")
    crop = page.locator("#filter-crops figure").nth(1)
    index = int(crop.get_attribute("data-index"))
    crop.click()
    page.wait_for_function(f"document.querySelector('#inspect-label').textContent.includes('test image {index} ')")
    assert page.locator("#filter-panel").is_hidden() and page.input_value("#test-index") == str(index)
    assert page.locator("#check-result").is_hidden()                     # the last image's check is gone

    # Your own PNG: a dark sneaker-like shape on white.
    photo = Image.new("RGB", (300, 160), (250, 250, 250))
    photo.paste((20, 20, 20), (20, 60, 280, 140))
    photo.save(tmp_path / "mine.png")
    page.set_input_files("#upload", str(tmp_path / "mine.png"))
    page.wait_for_function("document.querySelector('#inspect-label').textContent.includes('mine.png')")
    assert page.text_content("#upload-error") == ""
    (tmp_path / "bad.png").write_text("not an image")
    page.set_input_files("#upload", str(tmp_path / "bad.png"))
    page.wait_for_function("document.querySelector('#upload-error').textContent.includes('not an image')")

    # Draw on the canvas: a vertical stroke, then inspect the drawing.
    page.click("nav button[data-tab=inspect]")
    d = page.locator("#draw")
    d.scroll_into_view_if_needed()
    b = d.bounding_box()
    page.mouse.move(b["x"] + 110, b["y"] + 40)
    page.mouse.down()
    for y in range(40, 250, 10):
        page.mouse.move(b["x"] + 110 + (y // 30) * 6, b["y"] + y)
    page.mouse.up()
    assert has_content(d.screenshot(), 20)
    page.click("#use-drawing")
    page.wait_for_function("document.querySelector('#inspect-label').textContent.includes('drawing.png')")
    assert page.locator("#topk .bar").count() == 5
    shot(page, tmp_path, "drawing")

    # The network at a glance, on that drawing: every layer a column; a map opened, its sum over its input.
    page.click("nav button[data-tab=network]")
    page.wait_for_function("document.querySelector('#net-title').textContent.includes('drawing.png')")
    assert page.locator("#net .net-col").count() == 9                     # input, 7 layers, softmax
    page.locator("#net canvas[data-layer=conv2d_2]").nth(6).click()
    page.wait_for_selector("#focus-arith .partials details")
    assert page.locator("#focus-arith .partials details").count() == 64
    shot(page, tmp_path, "network")

    # The convolution lab: vertical edges of the Trouser, the pooled map, one pixel worked out.
    page.click("nav button[data-tab=lab]")
    page.wait_for_function("document.querySelector('#lab-arith').textContent.includes('= ')")
    assert "28×28 → 26×26 → 13×13" in page.text_content("#lab-arith")
    r = page.locator("#lab-result").bounding_box()
    page.mouse.click(r["x"] + r["width"] * 4.5 / 26, r["y"] + r["height"] * 7.5 / 26)
    page.wait_for_function("document.querySelector('#lab-arith').textContent.includes('output (7, 4)')")
    shot(page, tmp_path, "lab")

    assert page.errors == [] and page.outside == []
    # The console's only errors are the deliberate refusals: the upload that is not an image (400).
    assert page.console == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"], \
        page.console
