"""The README's pictures of the web explorer, taken again: `python docs/screenshots.py RUNS OUT`.

RUNS must hold a seed run and a dense run (e.g. `convlens train --name seed-5ep` and
`convlens train --model dense --name dense-5ep`). A real `convlens serve` over them is driven in
Debian's chromium (Playwright) as a user would: compare the two runs, train a third from the
page (its step curve and probe image), open the network at a glance and one of its maps, the
model, a confusion-matrix cell, an image, a feature-map pixel, the lab.
"""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def serve(runs: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "convlens", "serve", "--runs-dir", str(runs), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/api/presets", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the explorer did not start")


def shoot(page, out: Path, name: str) -> None:
    page.wait_for_timeout(400)
    page.screenshot(path=str(out / f"explorer-{name}.png"))
    print(out / f"explorer-{name}.png")


def tour(page, out: Path, seed: str, dense: str) -> None:
    page.select_option("#run-select", seed)
    page.select_option("#compare-select", dense)
    page.wait_for_selector("#compare-table tr")
    page.wait_for_selector("#curves svg.line-chart")
    chart = page.locator("#curves svg.line-chart").nth(1)
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)     # values under the pointer
    shoot(page, out, "runs")
    page.click("nav button[data-tab=train]")
    page.fill("#spec", "conv32-pool-flatten-dense64-dense10")
    page.fill("#epochs", "3")
    page.fill("#run-name", f"from-the-page-{time.strftime('%H%M%S')}")
    page.click("#start-training")
    page.wait_for_function("document.querySelector('#job-status').textContent.includes('finished')", timeout=600_000)
    page.wait_for_function("document.querySelector('#probe').dataset.epoch === '3'")
    page.evaluate("window.scrollTo(0, document.querySelector('#live-curves').getBoundingClientRect().top + window.scrollY - 70)")
    shoot(page, out, "train")
    page.select_option("#run-select", seed)
    page.click("nav button[data-tab=network]")
    page.wait_for_selector("#net .net-col canvas")
    shoot(page, out, "network")
    page.locator("#net canvas[data-layer=conv2d_2]").nth(6).click()
    page.wait_for_selector("#focus-arith .partials details")
    page.evaluate("window.scrollTo(0, document.querySelector('#net-focus').getBoundingClientRect().top + window.scrollY - 8)")
    big = page.locator("#net-focus .focus-left > canvas.focus-map")
    box = big.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 5.5 / 11, box["y"] + box["height"] * 7.5 / 11)
    page.wait_for_function("JSON.parse(document.querySelector('#focus-arith').dataset.shown || '{}').row === 7")
    page.locator("#focus-arith .partials summary").first.click()
    shoot(page, out, "network-map")
    page.click("nav button[data-tab=model]")
    page.wait_for_selector("#diagram .block")
    shoot(page, out, "model")
    page.click("nav button[data-tab=evaluate]")
    page.wait_for_selector("#confusion td")
    page.click("#confusion td[data-true='6'][data-pred='0']")                 # Shirts taken for T-shirts
    page.wait_for_function("[...document.querySelectorAll('#cell-gallery img')].every(i => i.complete)")
    shoot(page, out, "evaluate")
    page.locator("#cell-gallery figure").first.click()
    page.wait_for_selector("#layers canvas.conv")
    page.wait_for_function("!document.querySelector('#explain-view').hidden")
    page.evaluate("window.scrollTo(0, document.querySelector('.inspect-body').getBoundingClientRect().top "
                  "+ window.scrollY - 8)")                  # the maps and the side panel beside them
    canvas = page.locator("#layers canvas[data-layer=conv2d_1]").nth(6)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 13.5 / 26, box["y"] + box["height"] * 10.5 / 26)
    page.wait_for_function("document.querySelector('#arith').textContent.includes('Σ pixel × weight')")
    shoot(page, out, "inspect")
    page.click("nav button[data-tab=lab]")
    page.wait_for_function("document.querySelector('#lab-arith').textContent.includes('= ')")
    shoot(page, out, "lab")


def main(runs: str, out: str, seed: str = "seed-5ep", dense: str = "dense-5ep") -> None:
    proc, url = serve(Path(runs))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 950})
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            tour(page, Path(out), seed, dense)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main(*sys.argv[1:])
