"""Issue 12's new views, in Debian's chromium against a real `convlens serve`: the network at a glance
(every layer of the seed and of a BN/dropout spec, a map opened with its whole sum, pooling's winners),
curves that can be read (values under the pointer, best epoch marked), and training you can watch (the
step curve moving during epoch 1, the probe image's maps after it, the report linked)."""

import json
import shutil
import urllib.request

import numpy as np
import pytest
from conftest import run_cli, serving
from test_report_browser import browser  # noqa: F401 (the module's Chromium, a fixture)

pytestmark = pytest.mark.slow
BN_SPEC = "conv8p1-bn-relu-pool-dropout0.25-conv8-bn-pool-flatten-dense32-dropout0.3-dense10"


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_run, small_data_dir):
    """A server over the small seed run and a BN/dropout run (both on the 3,000-image real subset)."""
    runs = tmp_path_factory.mktemp("watch") / "runs"
    shutil.copytree(small_run.path, runs / "small")
    rc, _, err = run_cli("train", "--model", BN_SPEC, "--epochs", "2", "--no-report", "--name", "bn",
                         "--runs-dir", str(runs), "--data-dir", str(small_data_dir))
    assert rc == 0, err
    with serving(runs, "--data-dir", small_data_dir) as port:
        yield {"url": f"http://127.0.0.1:{port}", "runs": runs}


@pytest.fixture
def page(browser, served):      # noqa: F811 (browser: the fixture imported above)
    pg = browser.new_page(viewport={"width": 1280, "height": 800})
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.goto(served["url"] + "/")
    pg.wait_for_selector("body[data-ready='1']", timeout=30000)
    yield pg
    assert pg.errors == [], pg.errors          # no page error, no console error, no failed request
    pg.close()


def get(served, path):
    return json.load(urllib.request.urlopen(served["url"] + path))


def network(page, run, index=0):
    page.goto(page.url.split("?")[0] + f"?tab=network&run={run}&index={index}")
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    page.wait_for_function(f"document.querySelector('#net-title').textContent.startsWith('{run}: test image {index}')",
                           timeout=30000)


def hover_cell(page, canvas, row, col, h, w):
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * (col + 0.5) / w, box["y"] + box["height"] * (row + 0.5) / h)


@pytest.mark.parametrize("run", ["small", "bn"])
def test_the_network_at_a_glance_shows_every_layer_with_its_shape_and_parameters(page, served, run):
    network(page, run)
    summary = get(served, f"/api/runs/{run}")["summary"]["layers"]
    heads = page.locator("#net .net-head").all_text_contents()
    assert heads == ["input"] + [l["name"] for l in summary] + ["softmax"]
    feet = page.locator("#net .net-foot").all_inner_texts()[1:-1]
    for foot, layer in zip(feet, summary):
        assert layer["output"] in foot
        assert (f"{layer['params']:,} params" if layer["params"] else "no params") in foot
    for layer in summary:                    # a map for every channel of every spatial layer
        if len(layer["output_shape"]) == 3:
            shown = page.locator(f"#net canvas[data-layer='{layer['name']}']").count()
            assert shown == layer["output_shape"][0], layer["name"]
    assert len(page.locator("#net .net-bar").all()) == 10
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280      # the page never scrolls sideways


def test_an_opened_conv_map_adds_up_every_input_channel_to_the_value_feature_maps_gives(page, served, small_run,
                                                                                        real_data):
    from convlens import feature_maps
    network(page, "small", 4)
    page.click("#net canvas[data-layer=conv2d_2][data-channel='5']")
    page.wait_for_selector("#focus-arith .partials details")
    big = page.locator("#net-focus .focus-left > canvas.focus-map")
    hover_cell(page, big, 6, 3, 11, 11)
    page.wait_for_function("JSON.parse(document.querySelector('#focus-arith').dataset.shown || '{}').row === 6"
                           " && JSON.parse(document.querySelector('#focus-arith').dataset.shown).col === 3")
    shown = json.loads(page.get_attribute("#focus-arith", "data-shown"))
    truth = dict(feature_maps(small_run.load_model(), real_data.test_x[4:5]))["conv2d_2"][0, 5, 6, 3].item()
    assert shown["value"] == pytest.approx(truth, abs=1e-4)
    assert len(shown["sums"]) == 64 and page.locator("#focus-arith .partials details").count() == 64
    assert sum(shown["sums"]) == pytest.approx(shown["total"], abs=1e-4)
    assert shown["total"] + shown["bias"] == pytest.approx(shown["pre"], abs=1e-5)
    assert max(shown["pre"], 0) == pytest.approx(shown["value"], abs=1e-6)
    assert f"= {truth:.4f}" in page.text_content("#focus-arith .focus-value")
    # Each partial sum opens to its numbers: patch × kernel, whose products add up to it.
    first = page.locator("#focus-arith .partials details").first
    first.locator("summary").click()
    channel = int(first.get_attribute("data-channel"))
    products = [float(t) for t in first.locator("table").nth(2).locator("td").all_text_contents()]
    assert sum(products) == pytest.approx(shown["sums"][channel], abs=5e-4)
    # Its 64 kernels, drawn on a diverging scale, each with its weights under the pointer.
    weights = small_run.load_model().layers[2].weight[5].detach().numpy()        # conv2d_2, filter 5
    tiles = page.locator("#focus-kernels canvas.kernel-tile")
    assert tiles.count() == 64
    said = [float(v) for v in tiles.nth(7).get_attribute("title").split(": ")[1].replace("/", " ").split()]
    assert np.allclose(said, weights[7].ravel(), atol=5e-4)
    assert "(white: 0)" in page.text_content("#focus-kernels .legend")
    hover_cell(page, tiles.nth(7), 1, 2, 3, 3)                                   # a weight under the pointer
    page.wait_for_function("document.querySelector('.kernel-readout').textContent.includes('input channel 7')")
    assert page.text_content(".kernel-readout").endswith(f"weight (1, 2) = {weights[7, 1, 2]:.4f}")
    # The input pixels it sees, and the view in the address.
    top, left, bottom, right = get(served, "/api/runs/small/arithmetic?layer=conv2d_2&channel=5&row=6&col=3&index=4")[
        "receptive_field"]
    assert f"rows {top}–{bottom}, columns {left}–{right}" in page.text_content("#focus-seen")
    assert "layer=conv2d_2" in page.url and "map=5" in page.url and "tab=network" in page.url
    page.reload()                                                   # a reload lands on the same opened map
    page.wait_for_function("document.querySelector('#net-focus').dataset.map === 'conv2d_2/5'", timeout=30000)
    assert page.input_value("#net-index") == "4"


def test_an_opened_pooling_map_marks_each_windows_winner(page, served, small_run, real_data):
    from convlens import feature_maps
    network(page, "small", 2)
    page.click("#net canvas[data-layer=max_pooling2d_1][data-channel='3']")
    page.wait_for_function("document.querySelector('#focus-arith').dataset.winners")
    winners = np.array(json.loads(page.get_attribute("#focus-arith", "data-winners")))
    before = dict(feature_maps(small_run.load_model(), real_data.test_x[2:3]))["conv2d_1"][0, 3].numpy()
    windows = before[:26, :26].reshape(13, 2, 13, 2).transpose(0, 2, 1, 3).reshape(13, 13, 4)
    assert np.allclose(before[winners[..., 0], winners[..., 1]], windows.max(-1), atol=1e-6)
    r, c = np.unravel_index(np.argmax(windows.max(-1)), (13, 13))       # the brightest window: a clear winner
    hover_cell(page, page.locator("#net-focus .focus-left > canvas.focus-map"), r, c, 13, 13)
    wr, wc = winners[r, c]
    page.wait_for_function(f"document.querySelector('#focus-arith').textContent.includes('({wr}, {wc})')")
    assert f"= {before[wr, wc]:.4f}" in page.text_content("#focus-arith")


def test_inspect_shows_grad_cams_signs_on_a_diverging_scale(page, served):
    page.goto(page.url.split("?")[0] + "?tab=inspect&run=small&index=1")
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    page.wait_for_function("document.querySelector('#inspect-label').textContent.includes('test image 1')")
    cam = get(served, "/api/runs/small/inspect?index=1")["cam"]
    assert page.locator("#cam-signs-box").is_visible()
    legend = page.text_content("#cam-signs-legend")
    assert f"against {cam['target']}" in legend and f"for {cam['target']}" in legend
    signs = np.array(cam["signs"])
    assert signs.shape == (28, 28) and np.abs(signs).max() == pytest.approx(1, abs=1e-3)
    # The canvas is the diverging map: the most negative pixel is drawn bluer than the most positive one.
    lo, hi = np.unravel_index(signs.argmin(), signs.shape), np.unravel_index(signs.argmax(), signs.shape)
    rgb = page.evaluate("""([lo, hi]) => { const c = document.querySelector('#cam-signs'), g = c.getContext('2d');
        const at = ([r, k]) => Array.from(g.getImageData((k + 0.5) * c.width / 28, (r + 0.5) * c.height / 28, 1, 1).data);
        return [at(lo), at(hi)]; }""", [list(map(int, lo)), list(map(int, hi))])
    if signs.min() < -0.2:
        assert rgb[0][2] > rgb[0][0]                     # blue where the class is argued against
    assert rgb[1][0] > rgb[1][2]                         # red where it is argued for


def hold_back(page, url_end: str, ms: int = 1500) -> None:
    """The page's requests for a URL ending in `url_end` answer `ms` later: window.slowAsked is set when
    one is asked, window.slowDone a moment after its answer has been handed over."""
    page.evaluate("""([end, ms]) => { const f = window.fetch;
        window.fetch = (url, ...rest) => String(url).endsWith(end)
          ? (window.slowAsked = true, new Promise((r) => setTimeout(r, ms))
              .then(() => f(url, ...rest)).finally(() => setTimeout(() => { window.slowDone = true; }, 300)))
          : f(url, ...rest); }""", [url_end, ms])


def test_a_slow_answer_to_an_earlier_choice_does_not_draw_over_a_later_one(page, served):
    """The curves of one run are still loading when a run to compare with is chosen: the later choice's
    curves stay, whichever answer comes last (the browser's fetch of the first is held back 1.5 s)."""
    hold_back(page, "/api/curves?runs=small")
    page.select_option("#run-select", "small")
    page.wait_for_function("window.slowAsked === true")
    page.select_option("#compare-select", ["bn"])
    page.wait_for_function("document.querySelector('#curves').dataset.runs === 'small,bn'")
    page.wait_for_function("window.slowDone === true")
    assert page.locator("#curves").get_attribute("data-runs") == "small,bn"
    assert page.locator("#compare-table tr").count() >= 3            # the header and both runs


def test_a_run_chosen_while_another_loads_is_the_one_shown(page, served):
    """A run's details are held back 1.5 s while another run is chosen: the title, the curves and the
    report link stay the later run's."""
    hold_back(page, "/api/runs/small")
    page.select_option("#run-select", "small")
    page.wait_for_function("window.slowAsked === true")
    page.select_option("#run-select", "bn")
    page.wait_for_function("window.slowDone === true")
    assert page.locator("#curves-title").text_content() == "bn"
    assert page.locator("#curves").get_attribute("data-runs") == "bn"
    assert page.locator("#run-select").input_value() == "bn"


def test_curves_give_every_runs_values_under_the_pointer_and_mark_the_best_epoch(page, served):
    page.select_option("#run-select", "bn")
    page.select_option("#compare-select", ["small"])
    page.wait_for_function("document.querySelector('#curves').dataset.runs === 'bn,small'")
    chart = page.locator("#curves svg.line-chart").nth(1)                          # accuracy
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 14, box["y"] + box["height"] / 2)     # the last epoch
    page.wait_for_function("document.querySelectorAll('#curves svg')[1].dataset.hovered")
    hovered = {label: (x, y) for label, x, y in json.loads(chart.get_attribute("data-hovered"))}
    for run in ("bn", "small"):
        last = get(served, f"/api/runs/{run}")["metrics"][-1]
        assert hovered[f"{run} train"] == (last["epoch"], pytest.approx(last["accuracy"]))
        assert hovered[f"{run} val"] == (last["epoch"], pytest.approx(last["val_accuracy"]))
    best = get(served, "/api/curves?runs=bn")[0]["best"]
    assert f"best {best}" in chart.text_content() and chart.locator(".grid").count() >= 6   # gridlines, ticks


def test_training_from_the_page_draws_its_step_curve_during_epoch_1_and_the_probe_after_it(page, served):
    page.click("nav button[data-tab=train]")
    page.fill("#spec", "seed")
    page.fill("#epochs", "2")
    page.fill("#batch", "8")                     # 338 steps an epoch: epoch 1 lasts long enough to be watched
    page.fill("#run-name", "watched")
    page.fill("#probe-index", "5")               # the user's choice of probe image
    page.click("#start-training")
    page.wait_for_function("Number(document.querySelector('#live-curves').dataset.points || 0) >= 5"
                           " && document.querySelector('#job-status').textContent.includes('epoch 1/2')", timeout=120000)
    first = int(page.get_attribute("#live-curves", "data-points"))
    page.wait_for_function(f"Number(document.querySelector('#live-curves').dataset.points) > {first}", timeout=120000)
    assert page.locator("#live-curves svg.line-chart").count() == 3                # loss, accuracy, learning rate
    page.wait_for_function("document.querySelector('#probe').dataset.epoch === '1'", timeout=120000)
    snap = get(served, "/api/runs/watched/probe/1")
    assert snap["index"] == 5 and [l["name"] for l in snap["layers"]] == ["conv2d_1", "conv2d_2"]
    assert "test image 5" in page.text_content("#probe-title")
    page.fill("#probe-epoch", "0")                   # back to the untrained network (it stays there meanwhile)
    page.dispatch_event("#probe-epoch", "input")
    page.wait_for_function("document.querySelector('#probe').dataset.epoch === '0'")
    untrained = get(served, "/api/runs/watched/probe/0")
    assert page.locator("#probe-layers canvas").count() == 64                      # 32 maps of each conv layer
    assert page.locator("#probe-top .bar span").first.text_content() == \
        untrained["classes"][int(np.argmax(untrained["probabilities"]))]
    assert "0 (untrained)" in page.text_content("#probe-epoch-value")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('finished after 2 of 2')",
                           timeout=180000)
    job_curve = get(served, "/api/jobs")[-1]["curve"]
    assert len({p["x"] for p in job_curve if p["x"] < 1}) >= 50                   # step by step through epoch 1
    # Polled a few points at a time, the page drew every point the job has, in order, none twice.
    assert page.get_attribute("#live-curves", "data-points") == str(len(job_curve))
    page.click("nav button[data-tab=runs]")
    page.select_option("#run-select", "watched")
    page.wait_for_selector("#report-link:not([hidden])")
    with urllib.request.urlopen(served["url"] + page.get_attribute("#report-link", "href")) as r:
        assert r.status == 200 and b"watched" in r.read()
