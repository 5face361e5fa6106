"""report.html in headless Chromium (Debian's package, no network): it renders and every image
loads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report.render import PLOT_FILES, write_report
from run_fixtures import REPO, real_cpu_run

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--virtual-time-budget=10000",
]
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  var d = document.createElement('div');
  d.id = 'probe';
  d.setAttribute('data-images', imgs.length);
  d.setAttribute('data-loaded', ok);
  d.setAttribute('data-sections', document.querySelectorAll('section h2').length);
  d.setAttribute('data-tables', document.querySelectorAll('table').length);
  document.body.appendChild(d);
});
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe:
        return exe
    setup = REPO / ".ci" / "chromium_setup.sh"
    proc = subprocess.run(["bash", str(setup)], capture_output=True, text=True, timeout=900)
    exe = shutil.which("chromium")
    if not exe:
        why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(
            f"chromium cannot be installed here (.ci/chromium_setup.sh exit {proc.returncode}: "
            f"{why[0]})"
        )
    return exe


def _run(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    d = real_cpu_run(tmp_path_factory)
    html = d / "report.html"
    if not html.exists() or html.stat().st_mtime < (d / "summary.json").stat().st_mtime:
        write_report(d)  # test_report.py may have rendered it already in this session
    return d


def test_report_html_renders_and_every_image_loads(report_dir, tmp_path):
    exe = _chromium()
    html = (report_dir / "report.html").read_text()
    assert "<script" not in html  # the report itself is static
    # beside report.html, so relative references resolve alike
    probe = report_dir / "report_probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    try:
        proc = _run(exe, tmp_path / "profile", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(
        r'<div id="probe" data-images="(\d+)" data-loaded="(\d+)" data-sections="(\d+)" '
        r'data-tables="(\d+)"',
        proc.stdout,
    )
    assert m, proc.stdout[-2000:]
    images, loaded, sections, tables = map(int, m.groups())
    assert images == len(PLOT_FILES) and loaded == images
    assert sections >= 10 and tables >= 10


def test_report_html_screenshot_is_not_blank(report_dir, tmp_path):
    from PIL import Image

    exe = _chromium()
    shot = tmp_path / "shot.png"
    proc = _run(
        exe,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        (report_dir / "report.html").as_uri(),
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50  # text, tables and plots, not an empty page
