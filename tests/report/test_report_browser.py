"""report.html in headless Chromium: no console error, every figure present and loaded, a screenshot.

Needs the Debian ``chromium`` package: ``bash scripts/install-browser.sh`` (idempotent). Run with
``python -m pytest -q -m browser tests/test_report_browser.py``. The screenshot is kept under the test's tmp
folder and, when ``PTYCHO_EXP_SCREENSHOT_DIR`` is set, copied there.
"""
from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ptycho_exp.aggregate import aggregate
from tests.helpers.synthetic import write_synthetic_sweep

pytestmark = pytest.mark.browser

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--hide-scrollbars"]

# Injected into a copy of the page (the report itself carries no test code): record errors from the first
# moment, then after load write what the page shows into a <pre id="figure-check"> that --dump-dom returns.
_PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target !== window ? ('resource failed: ' + (e.target.src || e.target.href || e.target.tagName))
                                          : String(e.message || e);
  window.__errors.push(t);
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__errors.push('unhandled: ' + e.reason); });
(function () { var ce = console.error; console.error = function () {
  window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  ce.apply(console, arguments); }; })();
</script>"""
_PROBE_TAIL = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('img'));
  var plots = Array.prototype.slice.call(document.querySelectorAll('.plotly-fig'));
  var out = {
    images: imgs.map(function (i) { return {name: i.getAttribute('data-figure'), complete: i.complete,
                                            w: i.naturalWidth, h: i.naturalHeight}; }),
    plotly: plots.map(function (d) { return {name: d.getAttribute('data-figure'),
                                             drawn: !!d.querySelector('.main-svg'),
                                             gl: !!d.querySelector('canvas')}; }),
    errors: window.__errors,
    plotlyLoaded: typeof window.Plotly !== 'undefined'
  };
  var pre = document.createElement('pre'); pre.id = 'figure-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1500); });
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if exe is None:
        pytest.fail("headless Chromium not found: run `bash scripts/install-browser.sh` (Debian package chromium)")
    return exe


def _run(args: list[str], tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    profile = tmp / "chrome-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HOME": str(tmp)})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A study with a 3-D grid (heatmaps and 3-D surfaces), curves over n_train, a failed job."""
    tmp = tmp_path_factory.mktemp("browser")
    sweep = tmp / "sweep"
    write_synthetic_sweep(sweep, {"model": ["pinn", "baseline"], "data.n_train": [256, 1024],
                                  "data.nphotons": [1e4, 1e8], "data.gridsize": [1, 2], "seed": [1, 2]},
                          failed=[5], compare_png=True, recon_shape=(32, 32))
    # the iterative arm (no training set) as its own multirun, aggregated together with the first
    write_synthetic_sweep(tmp / "sweep_ptylab", {"model": ["ptylab"], "data.nphotons": [1e4, 1e8],
                                                 "data.gridsize": [1, 2], "seed": [1, 2]}, compare_png=True,
                          recon_shape=(32, 32))
    out = tmp / "aggregate"
    aggregate([sweep, tmp / "sweep_ptylab"], out)
    return out / "report.html"


def test_report_renders_with_every_figure(report, tmp_path):
    out = report.parent
    page = report.read_text(encoding="utf-8")
    probe = out / "_browser_check.html"  # same folder: relative links resolve as in the real page
    probe.write_text(page.replace("<head>", "<head>" + _PROBE_HEAD, 1).replace("</body>", _PROBE_TAIL + "</body>"),
                     encoding="utf-8")
    proc = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom",
                 probe.as_uri()], tmp_path)
    m = re.search(r'<pre id="figure-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading in headless Chromium:\n{proc.stderr[-3000:]}"
    check = json.loads(htmllib.unescape(m.group(1)))
    assert check["errors"] == [], check["errors"]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not [ln for ln in console if re.search(r"Uncaught|\b\w*Error\b:", ln)], console

    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    surfaces = sorted(p.name for p in (out / "plots").glob("*.plotly.json"))
    assert any(n.startswith("heatmap_") for n in pngs) and any(n.startswith("metric_vs_n_train") for n in pngs)
    assert surfaces, "a 3-D grid must give a 3-D surface"
    images = {i["name"]: i for i in check["images"]}
    assert sorted(images) == pngs  # every figure is on the page, once
    for name, i in images.items():
        assert i["complete"] and i["w"] > 100 and i["h"] > 100, (name, i)
    assert check["plotlyLoaded"], "plotly.js (inlined) did not load"
    drawn = {p["name"]: p for p in check["plotly"]}
    assert sorted(drawn) == surfaces
    assert all(p["drawn"] for p in drawn.values()), drawn


def test_report_screenshot(report, tmp_path):
    shot = tmp_path / "report.png"
    proc = _run(["--window-size=1280,2600", "--virtual-time-budget=15000", f"--screenshot={shot}",
                 report.as_uri()], tmp_path)
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    keep = os.environ.get("PTYCHO_EXP_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
        shutil.copy(report, Path(keep) / "report.html")


# ------------------------------------------------------------------ a model no better than a flat image
_FLAG_PROBE = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var out = {flags: [], firstFigureTop: null, firstTextTop: null, keyFigures: []};
  document.querySelectorAll('td .null-flag').forEach(function (b) {
    var td = b.closest('td'), tr = b.closest('tr'), r = b.getBoundingClientRect(), s = getComputedStyle(b);
    var num = td.firstChild && td.firstChild.nodeType === 3 ? td.firstChild.textContent : '';
    var range = document.createRange(); range.selectNodeContents(td.firstChild);
    var nr = range.getBoundingClientRect();
    out.flags.push({row: Array.prototype.map.call(tr.children, function (c) { return c.textContent; }).slice(0, 2),
                    number: num, badge: b.textContent, w: r.width, h: r.height, visible: s.visibility,
                    display: s.display, bg: s.backgroundColor,
                    dx: Math.max(0, r.left - nr.right, nr.left - r.right),
                    dy: Math.max(0, r.top - nr.bottom, nr.top - r.bottom)});
  });
  var key = document.getElementById('key-figures');
  if (key) {
    out.firstFigureTop = key.getBoundingClientRect().top;
    key.querySelectorAll('img').forEach(function (i) { out.keyFigures.push(i.getAttribute('data-figure')); });
  }
  var p = document.querySelector('h2 ~ ul, h2 ~ p');
  out.firstTextTop = p ? p.getBoundingClientRect().top : null;
  var pre = document.createElement('pre'); pre.id = 'flag-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 500); });
</script>"""


def test_a_model_no_better_than_a_flat_image_is_flagged_next_to_its_number(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, {"model": ["pinn", "baseline", "ptylab"], "data.n_train": [256, 1024],
                                  "seed": [1, 2, 3]}, recon_shape=(32, 32),
                          quality=lambda p: 0.04 if (p["model"] == "pinn" and p["data.n_train"] == 256)
                          else {"pinn": 0.9, "baseline": 0.8, "ptylab": 0.7}[p["model"]])
    out = tmp_path / "aggregate"
    aggregate([sweep], out)
    page = (out / "report.html").read_text(encoding="utf-8")
    probe = out / "_flag_check.html"
    probe.write_text(page.replace("</body>", _FLAG_PROBE + "</body>"), encoding="utf-8")
    proc = _run(["--window-size=1280,2000", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path)
    m = re.search(r'<pre id="flag-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading in headless Chromium:\n{proc.stderr[-3000:]}"
    check = json.loads(htmllib.unescape(m.group(1)))
    flags = check["flags"]
    # the results table: phase_ssim and amp_ssim cells of (pinn, 256), and only those, carry the badge
    assert len(flags) == 2 and all(f["row"] == ["pinn", "256"] for f in flags), flags
    for f in flags:
        assert re.match(r"^[0-9.]+ ± [0-9.]+ \(3/3\) $", f["number"]), f
        assert "no better than a flat image" in f["badge"]
        assert f["visible"] == "visible" and f["display"] != "none" and f["w"] > 50 and f["h"] > 8, f
        assert f["bg"] not in ("rgba(0, 0, 0, 0)", "transparent"), f  # a coloured badge
        assert f["dx"] < 40 and f["dy"] < 10, f  # touching the number: after it on its line or just below
    # the page opens with the key figure and the three-way reconstruction figure, above the text
    assert check["keyFigures"][0] == "metric_vs_n_train_phase_ssim.png"
    assert check["keyFigures"][1].startswith("three_way_")
    assert check["firstFigureTop"] < check["firstTextTop"]
