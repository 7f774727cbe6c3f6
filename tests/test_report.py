"""report.html in a real headless Chromium: loads without console errors, shows every video
of a small run with its timeline and contact sheet, every image loads; failed videos with
their reasons, dedup drops, and pagination for larger runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import curate
from jobs import report as report_cli
from operators.report import write_html_report
from operators.storage import Storage
from operators.write import read_table
from tests.browser import Browser, chromium_path
from tests.conftest import SAMPLE_VIDEOS
from tests.synthetic import make_shots_video

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (.ci/run installs it)")]

# Everything a person checks on a page, gathered in the page itself once every image has
# loaded (lazy images are made eager first, as scrolling through the page would).
PAGE_FACTS = """
(async () => {
  const imgs = [...document.querySelectorAll("img")];
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return {
    videos: [...document.querySelectorAll("section.video")].map(s => ({
      name: s.querySelector("h3 a").textContent, status: s.classList.contains("done") ? "done" : "failed",
      marks: s.querySelectorAll("svg.timeline rect[height='11']").length,
      curve: s.querySelectorAll("svg.timeline polyline").length,
      cuts: s.querySelectorAll("svg.timeline line[stroke='#d33']").length,
      images: s.querySelectorAll(".sheet img").length,
      error: (s.querySelector(".error") || {}).textContent || null})),
    images: imgs.length, loaded: imgs.filter(i => i.naturalWidth > 0).length,
    failed: [...document.querySelectorAll("#failed + table td:first-child")].map(td => td.textContent),
    dedup: (h => h ? h.textContent + " | " + (h.nextElementSibling || {}).textContent : null)(
      document.querySelector("#dedup")),
    pages: [...document.querySelectorAll("ol.pages a")].map(a => a.getAttribute("href")),
  };
})()
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, ray_local) -> Path:
    corpus = tmp_path_factory.mktemp("report_in")
    for f in SAMPLE_VIDEOS.iterdir():
        if f.suffix in (".webm", ".mpg"):
            shutil.copy(f, corpus / f.name)
    make_shots_video(corpus / "synthetic_three_shots.mp4", [3.0, 3.0, 3.0], fps=10)
    (corpus / "broken.mp4").write_text("not a video\n" * 30)
    out = tmp_path_factory.mktemp("report_out") / "out"
    assert curate.main([str(corpus), str(out), "--embedder", "features", "--method", "shots", "--k", "6",
                        "--fps", "2"]) == 0
    return out


def _check_page(browser: Browser, page: Path, name: str | None = None) -> dict:
    """Open a page; no console error, every image loaded; a screenshot `name`.png into
    $FRAMESIFT_SCREENSHOTS when that is set (to look at)."""
    browser.open(page.as_uri())
    facts = browser.evaluate(PAGE_FACTS)
    assert browser.errors() == []
    assert facts["images"] == facts["loaded"], facts
    if name and os.environ.get("FRAMESIFT_SCREENSHOTS"):
        browser.screenshot(Path(os.environ["FRAMESIFT_SCREENSHOTS"]) / f"{name}.png")
    return facts


def test_report_shows_every_video_with_timeline_and_frames(small_run):
    videos = read_table(Storage(), str(small_run), "videos").to_pylist()
    manifest = read_table(Storage(), str(small_run), "manifest").to_pylist()
    shots = read_table(Storage(), str(small_run), "shots").to_pylist()
    with Browser() as browser:
        facts = _check_page(browser, small_run / "report.html", "report")
    shown = {v["name"]: v for v in facts["videos"]}
    assert set(shown) == {Path(v["source_uri"]).name for v in videos}  # every video of the run
    assert facts["images"] == len(manifest) > 0
    for v in videos:
        s = shown[Path(v["source_uri"]).name]
        assert s["status"] == v["status"]
        if v["status"] == "done":
            n = sum(r["video_id"] == v["video_id"] for r in manifest)
            assert s["images"] == s["marks"] == n and s["curve"] == 1
            assert s["cuts"] == sum(r["video_id"] == v["video_id"] for r in shots) - 1
        else:
            assert s["error"] == v["error"]
    assert facts["failed"] == ["broken.mp4"]
    assert shown["synthetic_three_shots.mp4"]["cuts"] == 2
    assert "no dedup/ folder" in facts["dedup"]


def test_rebuilt_report_with_dedup_drops_and_pages(small_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_run, out)
    (out / "dedup").mkdir()
    drops = pa.table({"kind": ["video", "frame"], "dropped": ["s3://b/a.mp4", "x/frames/1.jpg"],
                      "duplicate_of": ["s3://b/b.mp4", "x/frames/2.jpg"], "similarity": [0.991, 0.975]})
    pq.write_table(drops, out / "dedup" / "drops.parquet")
    assert report_cli.main([str(out), "--page-videos", "2"]) == 0
    n_videos = len(read_table(Storage(), str(out), "videos"))
    with Browser() as browser:
        index = _check_page(browser, out / "report.html", "index")
        assert index["videos"] == [] and len(index["pages"]) == -(-n_videos // 2)
        assert "(2)" in index["dedup"] and "0.9910" in browser.evaluate("document.body.textContent")
        seen = []
        for i, href in enumerate(index["pages"]):
            page = _check_page(browser, out / href, "page1" if i == 0 else None)
            assert 1 <= len(page["videos"]) <= 2
            seen += [v["name"] for v in page["videos"]]
    assert len(seen) == len(set(seen)) == n_videos
    write_html_report(Storage(), str(out))  # back to one page: the pages go
    assert not list((out / "report").glob("page-*.html"))
