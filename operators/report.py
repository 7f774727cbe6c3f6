"""OUTPUT/report.html: a run a person can look at, built from the output's tables alone.

    report.html            the run summary (report.json and the tables), the failed videos
                           with their reasons, near-duplicate drops (dedup/*.parquet when
                           present) and, for a run of at most PAGE_VIDEOS videos, every video
    report/page-NNNNN.html PAGE_VIDEOS videos each, linked from report.html, for larger runs

Per video: a timeline (adjacent-frame feature distance from the timeline/ table, shot
boundaries, selected frames and clip windows; an inline SVG drawn by a few lines of inline
JS from JSON in the page) and a contact sheet of the selected frames. Pages need no network:
styles and script are inline and images are relative links into frames/, loaded lazily, so
a page of 100 videos opens at once and report.html of a 100k-video run stays small.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone

import pyarrow.parquet as pq

from operators.storage import Storage, join, write_bytes_atomic
from operators.write import read_table

PAGE_VIDEOS = 100
TIMELINE_POINTS = 800  # a longer timeline is max-pooled to this many points
MAX_LISTED = 1000  # failures / dedup drops listed on report.html at most
_MANIFEST_COLUMNS = ["video_id", "timestamp_s", "rank", "score", "shot_index", "clip_start_s", "clip_end_s",
                     "image_uri", "kind", "clip_uri"]


def write_html_report(storage: Storage, output: str, page_videos: int = PAGE_VIDEOS) -> str:
    """Build report.html (and its pages, for runs of more than `page_videos` videos) from
    OUTPUT's tables; returns report.html's URI. Pages are written first, report.html last,
    each atomically; pages left from a larger earlier report are removed."""
    data = gather(storage, output)
    videos = data["videos"]
    pages = [videos[i : i + page_videos] for i in range(0, len(videos), page_videos)] or [[]]
    single = len(pages) == 1
    names = [f"page-{i + 1:05d}.html" for i in range(len(pages))]
    if not single:
        for i, chunk in enumerate(pages):
            nav = _page_nav(i, names, prefix="")
            body = nav + _videos_html(chunk, data, "../") + nav
            page = _document(f"framesift report: videos {i * page_videos + 1}-{i * page_videos + len(chunk)}", body)
            write_bytes_atomic(storage, join(output, "report", names[i]), page.encode())
    _remove_stale_pages(storage, output, set() if single else set(names))
    body = _summary_html(data)
    if single:
        body += _videos_html(pages[0], data, "")
    else:
        links = "".join(f'<li><a href="report/{n}">videos {i * page_videos + 1}-{i * page_videos + len(p)}</a></li>'
                        for i, (n, p) in enumerate(zip(names, pages, strict=True)))
        body += f'<h2>Videos ({len(videos)}, {len(pages)} pages)</h2><ol class="pages">{links}</ol>'
    uri = join(output, "report.html")
    write_bytes_atomic(storage, uri, _document("framesift report", body).encode())
    return uri


def gather(storage: Storage, output: str) -> dict:
    """Everything the report shows, from OUTPUT: report.json, the videos (sorted by source
    URI), and per done video its selected frames, shot starts and timeline; dedup drops."""
    fs, path = storage.fs_for(join(output, "report.json"))
    run = {}
    try:
        run = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        pass
    videos = sorted(read_table(storage, output, "videos").to_pylist(), key=lambda r: (r["source_uri"], r["video_id"]))
    frames: dict[str, list] = {}
    for r in read_table(storage, output, "manifest", columns=_MANIFEST_COLUMNS).to_pylist():
        frames.setdefault(r["video_id"], []).append(r)
    shots: dict[str, list] = {}
    for r in read_table(storage, output, "shots", columns=["shot_index", "start_s", "end_s"]).to_pylist():
        shots.setdefault(r["video_id"], []).append(r)
    timeline = {r["video_id"]: r for r in read_table(storage, output, "timeline").to_pylist()}
    return {"run": run, "videos": videos, "frames": frames, "shots": shots, "timeline": timeline,
            "dedup": _dedup_rows(storage, output)}


def _dedup_rows(storage: Storage, output: str) -> dict | None:
    """OUTPUT/dedup/*.parquet as {"rows": first MAX_LISTED rows, "total": count, "files": n},
    or None when there is no such folder."""
    fs, path = storage.fs_for(join(output, "dedup"))
    try:
        names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet")
                       and not p.rsplit("/", 1)[-1].startswith((".", "_")))
    except FileNotFoundError:
        return None
    rows, total = [], 0
    for p in names:
        with fs.open(p, "rb") as f:
            t = pq.read_table(f)
        total += t.num_rows
        if len(rows) < MAX_LISTED:
            keep = [c for c in t.column_names if c != "embedding"]
            rows.extend(t.select(keep).slice(0, MAX_LISTED - len(rows)).to_pylist())
    return {"rows": rows, "total": total, "files": len(names)}


def _remove_stale_pages(storage: Storage, output: str, keep: set[str]) -> None:
    fs, path = storage.fs_for(join(output, "report"))
    try:
        old = [p for p in fs.ls(path, detail=False) if p.rsplit("/", 1)[-1].startswith("page-")]
    except FileNotFoundError:
        return
    stale = [p for p in old if p.rsplit("/", 1)[-1] not in keep]
    if stale:
        fs.rm(stale)


# --------------------------------------------------------------------------- HTML


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _rel(uri: str | None, folder: str, prefix: str) -> str | None:
    """A link to an output file from a report page: its path from `folder`/ on (frames/,
    clips/), after `prefix` ("" for report.html, "../" for pages)."""
    if not uri:
        return None
    i = uri.rfind(f"/{folder}/")
    return prefix + (uri[i + 1 :] if i >= 0 else uri)


def _fmt_s(s) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def _summary_html(data: dict) -> str:
    run, videos = data["run"], data["videos"]
    done = [v for v in videos if v["status"] == "done"]
    failed = [v for v in videos if v["status"] == "failed"]
    rows = [r for f in data["frames"].values() for r in f]
    clips = sum(r.get("kind") == "clip" for r in rows)
    frames = len(rows) - clips
    shots = sum(len(s) for s in data["shots"].values())
    rv = run.get("videos", {})
    facts = [
        ("input", run.get("input")), ("output", run.get("output")),
        ("method / k / fps", f"{run.get('method', '-')} / {run.get('k', '-')} / {run.get('fps', '-')}"),
        ("embedder", run.get("embedder")),
        ("last run", f"{rv.get('done', 0)} done, {rv.get('failed', 0)} failed, {rv.get('skipped', 0)} skipped "
                     f"in {_fmt_s(run.get('wall_seconds'))} ({run.get('video_seconds_per_wall_second', '-')}x real time)"),
        ("dataset", f"{len(videos)} videos: {len(done)} done, {len(failed)} failed; {frames} frames selected "
                    f"of {sum(v['frames_sampled'] or 0 for v in done)} sampled; {clips} clips; {shots} shots; "
                    f"{_fmt_s(sum(v['duration_s'] or 0 for v in done))} of video"),
    ]
    stages = run.get("stage_seconds") or {}
    if stages:
        facts.append(("seconds per stage", ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in stages.items())))
    out = ['<h1>framesift report</h1><table class="facts">']
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts]
    out.append(f'<tr><th>written</th><td>{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}</td></tr></table>')
    out.append(f'<h2 id="failed">Failed videos ({len(failed)})</h2>')
    if failed:
        out.append('<table class="list"><tr><th>video</th><th>reason</th></tr>')
        out += [f'<tr><td title="{_e(v["source_uri"])}">{_e(_name(v["source_uri"]))}</td><td>{_e(v["error"])}</td></tr>'
                for v in failed[:MAX_LISTED]]
        out.append("</table>")
        if len(failed) > MAX_LISTED:
            out.append(f"<p>... and {len(failed) - MAX_LISTED} more (the videos/ table has them all).</p>")
    else:
        out.append("<p>None.</p>")
    out.append(_dedup_html(data["dedup"]))
    return "".join(out)


def _dedup_html(dedup: dict | None) -> str:
    if dedup is None:
        return '<h2 id="dedup">Near-duplicate drops</h2><p>No corpus deduplication in this output (no dedup/ folder).</p>'
    out = [f'<h2 id="dedup">Near-duplicate drops ({dedup["total"]})</h2>']
    rows = dedup["rows"]
    if not rows:
        return out[0] + "<p>None dropped.</p>"
    cols = list(rows[0])
    out.append('<table class="list"><tr>' + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>")
    for r in rows:
        cells = (f"{r[c]:.4f}" if isinstance(r[c], float) else _name(str(r[c])) if isinstance(r[c], str)
                 and "://" in r[c] else r[c] for c in cols)
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    if dedup["total"] > len(rows):
        out.append(f"<p>... and {dedup['total'] - len(rows)} more in dedup/.</p>")
    return "".join(out)


def _page_nav(i: int, names: list[str], prefix: str) -> str:
    prev = f'<a href="{prefix}{names[i - 1]}">&larr; previous</a>' if i > 0 else ""
    nxt = f'<a href="{prefix}{names[i + 1]}">next &rarr;</a>' if i + 1 < len(names) else ""
    return f'<nav><a href="../report.html">summary</a> {prev} page {i + 1} of {len(names)} {nxt}</nav>'


def _timeline(row: dict | None) -> tuple[list[float], list[float]]:
    """A video's timeline, max-pooled to at most TIMELINE_POINTS points (peaks kept)."""
    if not row or not row["timestamps"]:
        return [], []
    t, d = row["timestamps"], row["distances"]
    if len(t) <= TIMELINE_POINTS:
        return [round(x, 3) for x in t], [round(x, 4) for x in d]
    step = len(t) / TIMELINE_POINTS
    ts, ds = [], []
    for b in range(TIMELINE_POINTS):
        lo, hi = int(b * step), max(int((b + 1) * step), int(b * step) + 1)
        j = max(range(lo, hi), key=lambda k: d[k])
        ts.append(round(t[j], 3))
        ds.append(round(d[j], 4))
    return ts, ds


def _videos_html(videos: list[dict], data: dict, prefix: str) -> str:
    """The video sections of one page, and the JSON its script draws the timelines from."""
    out, payload = [], []
    for n, v in enumerate(videos):
        vid = v["video_id"]
        anchor = f"v-{vid}"
        status = v["status"]
        head = (f'<section class="video {status}" id="{anchor}"><h3><a href="#{anchor}">{_e(_name(v["source_uri"]))}</a> '
                f'<span class="status">{_e(status)}</span></h3><p class="meta" title="{_e(v["source_uri"])}">')
        if status != "done":
            out.append(head + f'{_e(v["source_uri"])}</p><p class="error">{_e(v["error"])}</p></section>')
            continue
        rows = sorted(data["frames"].get(vid, []), key=lambda r: r["timestamp_s"])
        shots = sorted(data["shots"].get(vid, []), key=lambda r: r["shot_index"])
        t, d = _timeline(data["timeline"].get(vid))
        frames_json, clips = [], {}
        for r in rows:
            if r["clip_start_s"] is not None and r["clip_end_s"] is not None:
                clips[(r["clip_start_s"], r["clip_end_s"])] = True
            if r.get("kind") == "clip":
                continue
            frames_json.append({"t": round(r["timestamp_s"], 3), "rank": r["rank"], "shot": r["shot_index"]})
        payload.append({"n": n, "duration": v["duration_s"] or (t[-1] if t else 0.0), "t": t, "d": d,
                        "shots": [round(s["start_s"], 3) for s in shots[1:]],
                        "frames": frames_json, "clips": [list(c) for c in clips]})
        meta = (f'{_fmt_s(v["duration_s"])}, {v["width"]}x{v["height"]} at {v["fps"] or 0:.3g} fps; '
                f'{v["frames_sampled"]} frames sampled, {v["frames_embedded"]} embedded, '
                f'{v["frames_selected"]} selected (k={v["k"]}, {_e(v["method"])}); {v["shots"]} shots')
        sheet = []
        for j, r in enumerate(x for x in rows if x.get("kind") != "clip"):
            src = _rel(r["image_uri"], "frames", prefix)
            clip = _rel(r.get("clip_uri"), "clips", prefix)
            cap = f'{r["timestamp_s"]:.2f} s &middot; #{r["rank"]} &middot; shot {r["shot_index"]}'
            if clip:
                cap += f' &middot; <a href="{_e(clip)}">clip</a>'
            sheet.append(f'<figure data-frame="{j}"><img src="{_e(src)}" loading="lazy" alt="frame at '
                         f'{r["timestamp_s"]:.2f} s"><figcaption>{cap}</figcaption></figure>')
        out.append(head + meta + f'</p><svg class="timeline" data-video="{n}" role="img" aria-label="timeline"></svg>'
                   f'<div class="sheet">{"".join(sheet)}</div></section>')
    data_json = json.dumps({"videos": payload}, separators=(",", ":")).replace("</", "<\\/")
    return (f'<h2>Videos</h2><p class="legend"><span class="k dist"></span> adjacent-frame distance '
            f'<span class="k cut"></span> shot boundary <span class="k sel"></span> selected frame '
            f'<span class="k clip"></span> clip window</p>{"".join(out)}'
            f'<script type="application/json" id="framesift-data">{data_json}</script><script>{_SCRIPT}</script>')


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>{body}</body></html>\n')


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{margin:.2em 0;font-size:1.05em}
h3 a{color:inherit;text-decoration:none}
table{border-collapse:collapse}th,td{text-align:left;padding:2px 10px 2px 0;vertical-align:top}
table.list td,table.list th{border-bottom:1px solid #eee}
.facts th{color:#555;font-weight:600;white-space:nowrap}
section.video{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:1em 0}
section.failed{background:#fff6f5}.status{font-size:.8em;color:#777;font-weight:normal}
.meta{color:#555;margin:.2em 0}.error{color:#a21}
svg.timeline{width:100%;height:130px;display:block;background:#fafafa;border:1px solid #eee}
.sheet{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}
.sheet figure{margin:0;width:160px}.sheet img{width:160px;height:90px;object-fit:cover;display:block;
background:#eee;border:2px solid transparent}.sheet figure.on img{border-color:#1a7f37}
figcaption{font-size:11px;color:#555}
.legend .k{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
.k.dist{background:#555}.k.cut{background:#d33}.k.sel{background:#1a7f37}.k.clip{background:#4a7fd6;opacity:.4}
nav{margin:1em 0}nav a{margin-right:1em}ol.pages{columns:4}
"""

# Draws each timeline (SVG) from the page's JSON; hovering a selected frame's mark
# highlights its image in the contact sheet.
_SCRIPT = """
(function(){
  var NS="http://www.w3.org/2000/svg", H=130, TOP=14, BOT=112;
  var data=JSON.parse(document.getElementById("framesift-data").textContent);
  function el(name, attrs, parent){var e=document.createElementNS(NS,name);
    for(var k in attrs){e.setAttribute(k,attrs[k]);} if(parent){parent.appendChild(e);} return e;}
  function step(dur){var s=[1,2,5,10,15,30,60,120,300,600,900,1800,3600];
    for(var i=0;i<s.length;i++){if(dur/s[i]<=10){return s[i];}} return 7200;}
  data.videos.forEach(function(v){
    var svg=document.querySelector('svg.timeline[data-video="'+v.n+'"]'); if(!svg){return;}
    var W=Math.round(svg.getBoundingClientRect().width)||1000; svg.setAttribute("viewBox","0 0 "+W+" "+H);
    var dur=v.duration>0?v.duration:1, x=function(t){return Math.max(0,Math.min(W,t/dur*W));};
    var edges=[0].concat(v.shots,[dur]);
    for(var i=0;i+1<edges.length;i++){el("rect",{x:x(edges[i]),y:TOP,width:Math.max(0,x(edges[i+1])-x(edges[i])),
      height:BOT-TOP,fill:i%2?"#f0f0f0":"#fafafa"},svg);}
    v.clips.forEach(function(c){var r=el("rect",{x:x(c[0]),y:TOP,width:Math.max(1,x(c[1])-x(c[0])),height:BOT-TOP,
      fill:"#4a7fd6","fill-opacity":0.18},svg); el("title",{},r).textContent="clip "+c[0].toFixed(2)+"-"+c[1].toFixed(2)+" s";});
    var dmax=0.05; v.d.forEach(function(d){if(d>dmax){dmax=d;}});
    if(v.t.length){var pts=v.t.map(function(t,i){return x(t).toFixed(1)+","+(BOT-(BOT-TOP)*v.d[i]/dmax).toFixed(1);});
      el("polyline",{points:pts.join(" "),fill:"none",stroke:"#555","stroke-width":1.2,
        "vector-effect":"non-scaling-stroke"},svg);}
    v.shots.forEach(function(s){var l=el("line",{x1:x(s),x2:x(s),y1:TOP,y2:BOT,stroke:"#d33","stroke-width":1.5,
      "stroke-dasharray":"4 3","vector-effect":"non-scaling-stroke"},svg); el("title",{},l).textContent="shot boundary "+s.toFixed(2)+" s";});
    var figs=svg.parentNode.querySelectorAll(".sheet figure");
    v.frames.forEach(function(f,j){var m=el("rect",{x:Math.max(0,Math.min(W-6,x(f.t)-3)),y:2,width:6,height:11,fill:"#1a7f37"},svg);
      el("line",{x1:x(f.t),x2:x(f.t),y1:TOP,y2:BOT,stroke:"#1a7f37","stroke-width":1,"stroke-opacity":0.5,
        "vector-effect":"non-scaling-stroke"},svg);
      el("title",{},m).textContent="selected: "+f.t.toFixed(2)+" s, rank "+f.rank+", shot "+f.shot;
      var fig=figs[j]; if(fig){m.addEventListener("mouseenter",function(){fig.classList.add("on");});
        m.addEventListener("mouseleave",function(){fig.classList.remove("on");});}});
    var st=step(dur);
    for(var t=0;t<=dur+1e-9;t+=st){el("line",{x1:x(t),x2:x(t),y1:BOT,y2:BOT+4,stroke:"#999",
      "vector-effect":"non-scaling-stroke"},svg);
      var lab=el("text",{x:Math.min(x(t)+2,W-40),y:H-4,"font-size":11,fill:"#777"},svg);
      lab.textContent=(st>=60?(t/60)+" min":t+" s");}
  });
})();
"""
