"""The explorer's dead ends (issue 12, "broken today"), each in Debian's chromium against a real `convlens
serve` over three runs: the small seed run, a second model, and a run without weights. Every failure
shows in the page as a sentence; changing run never leaves the old run's maps; the hover panel never
moves the maps; the model diagram keeps its numbers apart; Stop says what happened; one test figure
per run; and the small ones."""

import http.client
import json
import shutil
import time
import urllib.error
import urllib.request

import pytest
from conftest import run_cli, serving
from test_report_browser import browser  # noqa: F401 (the module's Chromium, a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_run, small_data_dir):
    """A server over runs small (seed), other (a smaller network) and empty (killed before its weights were
    written); its terminal output goes to a file the tests read."""
    root = tmp_path_factory.mktemp("dead-ends")
    runs = root / "runs"
    shutil.copytree(small_run.path, runs / "small")
    rc, _, err = run_cli("train", "--model", "conv8-pool-flatten-dense10", "--epochs", "1", "--no-report",
                         "--name", "other", "--runs-dir", str(runs), "--data-dir", str(small_data_dir))
    assert rc == 0, err
    shutil.copytree(small_run.path, runs / "empty")
    (runs / "empty" / "model.safetensors").unlink()
    log = root / "server.log"
    with serving(runs, "--data-dir", small_data_dir, log=log) as port:
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "log": log, "runs": runs}


@pytest.fixture
def page(browser, served):      # noqa: F811 (browser: the fixture imported above)
    pg = browser.new_page(viewport={"width": 1280, "height": 800})
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(served["url"] + "/")
    pg.wait_for_selector("body[data-ready='1']", timeout=30000)
    yield pg
    assert pg.errors == [], pg.errors          # nothing failed unseen
    pg.close()


def choose_run(page, name):
    page.select_option("#run-select", name)
    page.wait_for_function(f"document.querySelector('#curves-title').textContent === {json.dumps(name)}")


def inspect_index(page, index):
    page.fill("#test-index", str(index))
    page.click("#inspect-test")


def test_inspect_failures_are_said_in_the_page(page):
    choose_run(page, "small")
    page.click("nav button[data-tab=inspect]")
    for index, words in ((10000, "10000"), (-5, "index must be at least 0")):
        inspect_index(page, index)
        page.wait_for_function("document.querySelector('#inspect-error').textContent.length > 0")
        said = page.text_content("#inspect-error")
        assert words in said and "{" not in said, said
        page.wait_for_function("!document.querySelector('#status').textContent.includes('inspecting')")
        assert page.text_content("#status") == f"error: {said}" and page.locator("#inspect-result").is_hidden()
    inspect_index(page, 3)
    page.wait_for_function("document.querySelector('#inspect-label').textContent.includes('test image 3')")
    assert page.text_content("#inspect-error") == ""
    choose_run(page, "empty")                                    # no weights: re-inspecting says so
    page.wait_for_function("document.querySelector('#inspect-error').textContent.includes('no trained weights')")
    assert page.locator("#inspect-result").is_hidden()


def test_a_rule_broken_in_the_train_form_is_a_sentence(page):
    page.click("nav button[data-tab=train]")
    page.fill("#epochs", "500")
    page.click("#start-training")
    page.wait_for_function("document.querySelector('#spec-error').textContent.length > 0")
    assert page.text_content("#spec-error") == "epochs must be at most 200"


def test_changing_run_inspects_the_image_again_with_that_run(page, served):
    choose_run(page, "small")
    page.click("nav button[data-tab=inspect]")
    inspect_index(page, 3)
    page.wait_for_selector("#layers canvas[data-layer=conv2d_1]")
    assert page.locator("#layers canvas[data-layer=conv2d_1]").count() == 64
    choose_run(page, "other")
    page.wait_for_function("document.querySelectorAll('#layers canvas[data-layer=conv2d_1]').length === 8")
    truth = json.load(urllib.request.urlopen(served["url"] + "/api/runs/other/inspect?index=3"))
    shown = page.locator("#topk .bar span").first.text_content()
    assert shown == truth["top"][0]["class"] and "test image 3" in page.text_content("#inspect-label")
    page.locator("#layers canvas[data-layer=conv2d_1]").first.hover(position={"x": 30, "y": 30})
    page.wait_for_function("document.querySelector('#arith').textContent.includes('conv2d_1, filter 0')")
    row, col = (int(v) for v in page.text_content("#arith").split("output pixel (")[1].split(")")[0].split(", "))
    a = json.load(urllib.request.urlopen(served["url"] + "/api/runs/other/arithmetic?layer=conv2d_1&channel=0"
                                         f"&row={row}&col={col}&index=3"))
    assert f"{a['value']:.4f}" in page.text_content("#arith")                 # the new run's arithmetic


def settled_box(page, locator) -> dict:
    """The locator's box once the page has stopped moving by itself: every image loaded, the fonts in, and two
    reads 100 ms apart the same (on a loaded machine a late image or font can still shift it by a fraction of a
    pixel after the maps are drawn; only what hovering does is under test)."""
    page.wait_for_function("document.fonts.status === 'loaded'"
                           " && [...document.images].every(i => !i.src || i.complete)")
    box, deadline = locator.bounding_box(), time.monotonic() + 5
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)
        box, previous = locator.bounding_box(), box
        if box == previous:
            break
    return box


def test_hovering_never_moves_the_maps_and_leaving_clears_the_panel(page):
    choose_run(page, "small")
    page.click("nav button[data-tab=inspect]")
    inspect_index(page, 0)
    page.wait_for_selector("#layers canvas[data-layer=conv2d_2]")
    target = page.locator("#layers canvas[data-layer=conv2d_2]").nth(5)
    target.scroll_into_view_if_needed()
    before = settled_box(page, target)
    target.hover(position={"x": 20, "y": 20})
    page.wait_for_function("document.querySelector('#arith').textContent.includes('conv2d_2, filter 5')")
    assert target.bounding_box() == before                       # the panel beside the maps, of a fixed size
    panel, maps = page.locator("#arith").bounding_box(), page.locator("#layers").bounding_box()
    assert panel["x"] >= maps["x"] + maps["width"] - 1          # beside, never over the maps
    page.mouse.move(5, 5)                                        # leave: the hint again, no outline
    page.wait_for_function("document.querySelector('#arith').textContent.startsWith('Hover a pixel')")


def test_every_map_has_its_colour_scale_and_says_its_value_under_the_pointer(page, served, small_run, real_data):
    """A pooling map (no arithmetic to show) gives its value on hover, to 8-bit precision of the true one."""
    from convlens import feature_maps
    choose_run(page, "small")
    page.click("nav button[data-tab=inspect]")
    inspect_index(page, 0)
    page.wait_for_selector("#layers canvas[data-layer=max_pooling2d_1]")
    assert page.locator("#layers .legend").count() == 4                  # each spatial layer
    pool = page.locator("#layers canvas[data-layer=max_pooling2d_1]").nth(3)
    pool.scroll_into_view_if_needed()
    box = pool.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 6.5 / 13, box["y"] + box["height"] * 4.5 / 13)   # pixel (4, 6)
    page.wait_for_function("[...document.querySelectorAll('.readout')].some(r => r.textContent.startsWith('map 3 (4, 6)'))")
    said = next(t for t in page.locator(".readout").all_text_contents() if t.startswith("map 3"))
    maps = dict(feature_maps(small_run.load_model(), real_data.test_x[:1]))
    truth = maps["max_pooling2d_1"][0, 3]
    assert abs(float(said.split("≈ ")[1]) - float(truth[4, 6])) <= float(truth.max() - truth.min()) / 255 + 1e-3


def test_the_model_diagram_keeps_shapes_and_parameter_counts_apart(page):
    choose_run(page, "small")
    page.click("nav button[data-tab=model]")
    page.wait_for_selector("#diagram .block")
    texts = page.locator("#diagram .block").all_inner_texts()
    conv = next(t for t in texts if t.startswith("conv2d_2"))
    dense = next(t for t in texts if t.startswith("dense_2"))
    assert "11×11×64\n36,928 params" in conv, conv
    assert "10 units\n1,290 params" in dense, dense
    assert all("×640" not in t and "101,290" not in t for t in texts)


def test_one_test_figure_per_run_everywhere(page, served):
    """The runs table and the Evaluate view show the same accuracy: the one results.json records."""
    results = json.loads((served["runs"] / "small" / "results.json").read_text())
    choose_run(page, "small")
    row = page.locator("#runs-table tr[data-run=small] td").nth(4).text_content()
    page.click("nav button[data-tab=evaluate]")
    page.wait_for_function("document.querySelector('#eval-metrics').textContent.includes('accuracy')")
    shown = page.text_content("#eval-metrics")
    figure = f"{100 * results['test_accuracy']:.2f} %"
    assert figure == row and figure in shown, (row, shown)
    heads = page.locator("#confusion th.colhead").all_text_contents()
    assert heads[0] == "T-shirt/top" and heads[-1] == "Ankle boot"          # whole class names


def test_each_mistake_in_evaluate_shows_why(page, served):
    """A cell off the diagonal opens its images each with its saliency and LayerCAM for the class it was
    taken for (views.reasons, as the report's gallery); a diagonal cell, the plain images."""
    choose_run(page, "small")
    page.click("nav button[data-tab=evaluate]")
    page.wait_for_selector("#confusion td")
    cells = page.locator("#confusion td")
    wrong = next(c for c in cells.all() if c.get_attribute("data-true") != c.get_attribute("data-pred")
                 and int(c.text_content()) > 0)
    t, p = wrong.get_attribute("data-true"), wrong.get_attribute("data-pred")
    wrong.click()
    first = page.locator("#cell-gallery img").first
    first.scroll_into_view_if_needed()                       # loaded as they come into view
    page.wait_for_function("document.querySelector('#cell-gallery img').naturalWidth > 0")
    assert f"reasons.png?target={p}" in first.get_attribute("src")
    assert first.evaluate("i => i.naturalWidth") == 3 * (28 * 3 + 2)          # image, saliency, LayerCAM
    assert "LayerCAM" in page.text_content("#cell-title")
    page.click(f"#confusion td[data-true='{t}'][data-pred='{t}']")
    page.wait_for_function("document.querySelector('#cell-gallery img') && "
                           "!document.querySelector('#cell-gallery img').src.includes('reasons')")


def test_stop_says_stopping_then_where_it_stopped_and_how_to_go_on(page, served):
    page.click("nav button[data-tab=train]")
    page.fill("#spec", "seed")
    page.fill("#epochs", "200")                  # cannot finish before the stop, on any CPU
    page.fill("#run-name", "stopped")
    page.click("#start-training")
    # Driven by what happened: stop once the second epoch is under way.
    page.wait_for_function("Number((/epoch (\\d+)\\/200/.exec(document.querySelector('#job-status').textContent) "
                           "|| [0, 0])[1]) >= 2", timeout=120000)
    page.click("#stop-training")
    assert "stopping…" in page.text_content("#job-status")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('stopped after')",
                           timeout=120000)
    said = page.text_content("#job-status")
    done = json.loads((served["runs"] / "stopped" / "results.json").read_text())["epochs_run"]
    assert f"stopped after {done} of 200 epochs" in said and "convlens train --resume stopped" in said, said
    page.click("nav button[data-tab=runs]")
    assert page.locator("#runs-table tr[data-run=stopped] td").nth(3).text_content() == f"{done}/200"


def test_stop_then_resume_from_the_page_ends_with_the_epochs_asked_for(page, served):
    page.click("nav button[data-tab=train]")
    page.fill("#spec", "seed")
    page.fill("#epochs", "10")
    page.fill("#run-name", "again")
    page.click("#start-training")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('step')", timeout=120000)
    page.click("#stop-training")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('stopped after')",
                           timeout=120000)
    assert page.locator("#resume-training").is_visible()
    page.click("nav button[data-tab=runs]")                       # the runs table offers it too
    page.wait_for_selector("#runs-table button[data-resume=again]")
    page.click("#runs-table button[data-resume=again]")
    page.wait_for_function("document.querySelector('nav button.active').dataset.tab === 'train'")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('finished after 10 of 10')",
                           timeout=180000)
    results = json.loads((served["runs"] / "again" / "results.json").read_text())
    assert results["epochs_run"] == 10 and not results["interrupted"] and results["resumes"] == 1
    page.click("nav button[data-tab=runs]")
    row = page.locator("#runs-table tr[data-run=again] td")
    assert row.nth(3).text_content() == "10/10" and row.nth(5).text_content() == "finished"
    r = urllib.request.Request(served["url"] + "/api/runs/again/resume", data=b"{}", method="POST",
                               headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(r)
    assert refused.value.code == 409 and "has finished" in json.loads(refused.value.read())["detail"]


def test_the_view_is_in_the_address_and_a_reload_lands_on_it(page, served):
    page.goto(served["url"] + "/?tab=inspect&run=other&index=7&layer=conv2d_1&map=3")      # a shared link
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("!document.querySelector('#filter-panel').hidden")
    assert page.input_value("#run-select") == "other" and "test image 7 " in page.text_content("#inspect-label")
    assert page.locator("nav button.active").get_attribute("data-tab") == "inspect"
    assert page.text_content("#filter-title").startswith("What filter 3 of conv2d_1 looks for")
    choose_run(page, "small")                                    # the same image, through another run
    page.wait_for_function("document.querySelectorAll('#layers canvas[data-layer=conv2d_1]').length === 64")
    inspect_index(page, 5)
    page.wait_for_function("document.querySelector('#inspect-label').textContent.includes('test image 5 ')")
    page.locator("#layers canvas[data-layer=conv2d_2]").nth(2).click()
    page.wait_for_function("!document.querySelector('#filter-panel').hidden")
    assert page.url.endswith("/?tab=inspect&run=small&index=5&layer=conv2d_2&map=2"), page.url
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("!document.querySelector('#filter-panel').hidden")
    assert page.input_value("#run-select") == "small" and "test image 5 " in page.text_content("#inspect-label")
    assert page.text_content("#filter-title").startswith("What filter 2 of conv2d_2 looks for")
    page.click("nav button[data-tab=evaluate]")
    assert "tab=evaluate" in page.url and "run=small" in page.url


def test_a_spec_being_typed_shows_its_table_so_far(page):
    page.click("nav button[data-tab=train]")
    rows = "document.querySelectorAll('#spec-summary tr').length"
    for typed, layers, words in (("conv16-pool-co", 2, "token 3"), ("conv16-pool-flatten", 3, "must end with a dense"),
                                 ("conv16-pool-flatten-dense10", 4, "")):
        page.fill("#spec", typed)
        page.wait_for_function(f"{rows} === {layers + 2} && document.querySelector('#spec-error').textContent"
                               f".includes({json.dumps(words)})")          # header, the layers, the total
        assert page.is_disabled("#start-training") == bool(words)
    assert "multiply-adds" in page.text_content("#spec-total")


def test_the_small_ones(page, served):
    # A spec typed by hand: the preset box says so; a flat layer where an image is needed, in H×W×C.
    page.click("nav button[data-tab=train]")
    page.fill("#spec", "conv8-pool-flatten-dense10")
    assert page.input_value("#preset") == ""
    page.fill("#spec", "dense64-dense10")
    page.wait_for_function("document.querySelector('#spec-error').textContent.includes('28×28×1')")
    page.fill("#spec", "seed")
    page.wait_for_function("document.querySelector('#preset').value === 'seed'")
    # "Compare with" never offers the run that is selected.
    choose_run(page, "small")
    page.click("nav button[data-tab=runs]")
    offered = page.eval_on_selector_all("#compare-select option", "os => os.filter(o => !o.hidden).map(o => o.value)")
    assert "small" not in offered and "other" in offered
    page.select_option("#compare-select", ["other", "empty"])        # any number of runs, overlaid
    page.wait_for_function("document.querySelectorAll('#compare-table tr').length === 4")
    compared = [r.split()[0] for r in page.locator("#compare-table tr").all_inner_texts()[1:]]
    assert compared[0] == "small" and sorted(compared[1:]) == ["empty", "other"]
    page.wait_for_function("document.querySelector('#curves').dataset.runs === 'small,other,empty'"
                           " || document.querySelector('#curves').dataset.runs === 'small,empty,other'")
    legend = page.text_content("#curves .chart-legend")
    assert "small train" in legend and "other train" in legend and "empty train" in legend
    # The lab: no upload yet is said, not replaced by a test image; a typed kernel is the kernel used.
    page.click("nav button[data-tab=lab]")
    page.wait_for_function("document.querySelector('#lab-arith').textContent.length > 0")
    page.check("#lab-use-upload")
    page.click("#lab-run")
    page.wait_for_function("document.querySelector('#lab-error').textContent.includes('no image uploaded')")
    page.uncheck("#lab-use-upload")
    page.fill("#lab-custom", "0,0,0;0,2,0;0,0,0")
    page.click("#lab-run")
    page.wait_for_function("document.querySelector('#lab-arith').textContent.includes('kernel custom')")
    assert page.input_value("#lab-kernel") == "custom"
    assert [c.strip() for c in page.locator("#lab-kernel-table td").all_text_contents()] == \
        ["0", "0", "0", "0", "2", "0", "0", "0", "0"]


def test_a_malformed_upload_is_answered_and_leaves_the_terminal_quiet(served):
    bodies = [b'junk before\r\n--XX\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc\r\n--XX--\r\n',
              b'--XX\nContent-Disposition: form-data; name="file"\n\nabc\n--XX--\n']
    for body in bodies:
        c = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=30)
        c.request("POST", "/api/upload", body=body, headers={"Content-Type": "multipart/form-data; boundary=XX"})
        r = c.getresponse()
        assert r.status == 400 and json.loads(r.read())["detail"]
    time.sleep(0.5)
    lines = served["log"].read_text(errors="replace").splitlines()
    assert [line for line in lines if not line.startswith("convlens explorer:")] == [], lines


def test_runs_sort_rename_and_delete_and_never_a_path_or_a_training_run(page, served):
    runs = served["runs"]
    shutil.copytree(runs / "small", runs / "spare")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.click("#runs-table th[data-sort=test_accuracy]")           # sorted, best first; again: worst first
    shown = [float(t.split()[0]) for t in page.locator("#runs-table tbody tr td:nth-child(5)").all_text_contents()
             if t.strip() != "–"]
    assert shown == sorted(shown, reverse=True) and len(shown) >= 3
    page.click("#runs-table th[data-sort=test_accuracy]")
    shown = [float(t.split()[0]) for t in page.locator("#runs-table tbody tr td:nth-child(5)").all_text_contents()
             if t.strip() != "–"]
    assert shown == sorted(shown)
    assert page.locator("#runs-table tr[data-run=small] td").nth(6).text_content() == "243,786"

    choose_run(page, "spare")
    page.once("dialog", lambda d: d.accept("../outside"))             # a path: refused, said
    page.click("#rename-run")
    page.wait_for_function("document.querySelector('#manage-error').textContent.length > 0")
    assert (runs / "spare").is_dir() and not (runs.parent / "outside").exists()
    page.once("dialog", lambda d: d.accept("kept"))
    page.click("#rename-run")
    page.wait_for_function("document.querySelector('#run-select').value === 'kept'")
    assert (runs / "kept" / "model.safetensors").exists() and not (runs / "spare").exists()
    page.once("dialog", lambda d: d.dismiss())                          # not confirmed: nothing happens
    page.click("#delete-run")
    assert (runs / "kept").is_dir()
    page.once("dialog", lambda d: d.accept())
    page.click("#delete-run")
    page.wait_for_function("!document.querySelector('#runs-table tr[data-run=kept]')")
    assert not (runs / "kept").exists() and page.input_value("#run-select") != "kept"

    page.click("nav button[data-tab=train]")                          # a run in training is never deleted
    page.fill("#spec", "seed")
    page.fill("#epochs", "200")
    page.fill("#run-name", "busy")
    page.click("#start-training")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('step')", timeout=120000)
    request = urllib.request.Request(served["url"] + "/api/runs/busy", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 409 and "training" in json.loads(refused.value.read())["detail"]
    page.click("#stop-training")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('stopped after')",
                           timeout=120000)
    assert (runs / "busy" / "config.json").exists()
