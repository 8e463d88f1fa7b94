"""`python -m talkinghead.report` / `talkinghead report`: reports/index.html, one static page for the whole project.

On the page: the git commit and date; the demo video; a summary table across presenters; the lip model's validation
curve; lip sync driven by other speakers; then per presenter every stage's metrics (reports/<stage>/<NAME>/
metrics.json) as tables with units and which direction is better, model and baselines as columns, the curves whose
data the stages left (fit error, mouth opening real vs generated) drawn as inline SVG, fit overlays, labelled sample
grids and the side-by-side video.

The page must work from a fresh clone, where the MP4s are absent (git ignores reports/**/*.mp4): each video gets a
small animated WebP preview (made here from the MP4, a few hundred KB, committed with the page) shown as the
player's poster, and a player whose video cannot be loaded is replaced by that preview and a "run `make demo`" note
(a few lines of inline script). Static HTML with relative links, inline CSS and script only (no external assets), so
the reports folder can be zipped and opened anywhere.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .paths import REPORTS
from .tracking import flatten, git_commit

STAGE_ORDER = ["extract", "landmarks", "sync", "fit", "align", "lip", "composites", "gan", "eval"]
STAGE_TITLES = {"extract": "extract (frames, crops, audio)", "landmarks": "landmarks (FaceMesh)",
                "sync": "sync (the footage's sound against its picture)",
                "fit": "fit (head model to landmarks)", "align": "align (audio features per video frame)",
                "lip": "lip model on the held-out tail",
                "composites": "composites (render on the real crop: the GAN's input)",
                "gan": "GAN on the held-out tail", "eval": "evaluate: speak on held-out speech vs the real video"}
DEMO_VIDEO = Path("demo") / "demo.mp4"
PREVIEW_SUFFIX = "_preview.webp"
PREVIEW_WIDTH, PREVIEW_FPS, PREVIEW_SECONDS = 240, 8, 6.0

# metric -> (label, unit, better): "higher", "lower", "0" (closest to zero) or "1" (closest to one, a ratio to the
# real footage). A nested key (appearance.model.mouth_psnr) is labelled by its last part; unknown metrics show their
# key only.
METRICS: dict[str, tuple[str, str, str]] = {
    "lve_mm2": ("lip vertex error (LVE)", "mm²", "lower"),
    "mouth_opening_r": ("mouth-opening Pearson r", "", "higher"),
    "av_offset": ("AV offset", "frames", "0"),
    "offset_frames": ("footage audio offset applied (+ = sound late)", "frames", "0"),
    "measured_lag": ("sync detector's best lag", "frames", "0"),
    "r_at_lag": ("sync detector r at its best lag", "", "higher"),
    "r_at_zero": ("sync detector r as recorded", "", "higher"),
    "offset_s": ("footage audio offset applied (+ = sound late)", "s", "0"),
    "applied": ("offset applied", "", ""), "reason": ("why", "", ""),
    "frames_used": ("frames measured (before the held-out tail)", "frames", ""),
    "lmd": ("mouth landmark distance (LMD)", "px", "lower"),
    "mouth_psnr": ("mouth PSNR", "dB", "higher"), "mouth_ssim": ("mouth SSIM", "", "higher"),
    "full_psnr": ("full-crop PSNR", "dB", "higher"), "full_ssim": ("full-crop SSIM", "", "higher"),
    "nme_pct": ("landmark NME", "% inter-ocular", "lower"),
    "lip_nme_pct": ("lip landmark NME", "% inter-ocular", "lower"),
    "jitter_px": ("fitted landmark jitter", "px", "lower"), "landmark_jitter_px": ("FaceMesh jitter", "px", "lower"),
    "jitter_accel_px": ("fitted landmark acceleration", "px", "lower"),
    "landmark_jitter_accel_px": ("FaceMesh acceleration", "px", "lower"),
    "fit_frames_per_s": ("fit speed", "frames/s", "higher"),
    "fit_frames_per_cpu_s": ("fit speed", "frames/CPU s", "higher"),
    "detection_rate": ("face detection rate", "", "higher"),
    "face_detection_rate": ("face detection rate", "", "higher"),
    "lve_reduction_vs_static": ("LVE below the still face", "fraction", "higher"),
    "heldout_frames": ("held-out frames", "frames", ""), "frames": ("frames", "", ""),
    "train_seconds": ("training time", "s", ""), "steps": ("training steps", "", ""),
    "best_val_loss": ("best validation loss", "", "lower"),
    "open_mouth_psnr": ("open-mouth PSNR", "dB", "higher"), "open_mouth_ssim": ("open-mouth SSIM", "", "higher"),
    "open_real": ("colour detail, real open mouths", "levels of 255", ""),
    "open_composite": ("colour detail, composite open mouths", "levels of 255", ""),
    "open_generated": ("colour detail, generated open mouths", "levels of 255", ""),
    "open_generated_ratio": ("colour detail, generated over real", "×", "1"),
    "colour_cast.open_generated": ("colour cast, generated open mouths vs real", "levels of 255", "lower"),
    "colour_cast.open_composite": ("colour cast, composite open mouths vs real", "levels of 255", "lower"),
    "interior_cast.open_generated": ("colour cast inside the real opening (teeth), generated vs real", "levels of 255",
                                     "lower"),
    "interior_cast.open_composite": ("colour cast inside the real opening (teeth), composite vs real", "levels of 255",
                                     "lower"),
    "real_mouth_change": ("mouth change per frame, real", "levels of 255", ""),
    "generated_mouth_change": ("mouth change per frame, generated", "levels of 255", ""),
    "fitted_mouth_change": ("mouth change per frame, generated from the fitted expression", "levels of 255", ""),
    "generated_ratio": ("mouth change per frame, generated over real", "×", "1"),
    "fitted_ratio": ("mouth change per frame, fitted-expression render over real", "×", "1"),
}
SYSTEM_NAMES = {"model": "model", "gan": "GAN (model)", "composite": "composite (its input)",
                "baseline_static_mean": "still face", "baseline_static": "still face",
                "baseline_ridge": "ridge regression", "baseline_shifted": "model shifted 3 frames"}
BETTER = {"higher": "↑ higher", "lower": "↓ lower", "0": "0 best", "1": "1 best"}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; } td.unit, td.better { color: #555; font-size: .9em; }
img { max-width: 100%; border: 1px solid #ddd; margin: .3em 0; } video { max-width: 100%; }
.muted { color: #777; } figure { margin: .5em 0 1.2em; } figcaption { font-size: .85em; color: #555; }
.cols { display: flex; font-size: .85em; font-weight: bold; color: #444; }
.cols span { flex: 1; text-align: center; } .grid { display: inline-block; max-width: 100%; }
.gallery img { max-width: 32%; } svg { font-size: 11px; font-family: system-ui, sans-serif; }
.note { background: #fff8e0; border: 1px solid #e8d9a0; padding: .4em .8em; }
"""
# A video that cannot load (a fresh clone: git ignores the MP4s) becomes its preview and a note, not a dead player
SCRIPT = """
function videoMissing(source) {
  var video = source.parentNode, figure = video.parentNode;
  var note = document.createElement('p');
  note.className = 'note';
  note.innerHTML = 'The video <code>' + source.getAttribute('src') + '</code> is not in git' +
    (video.poster ? '; above: a low-resolution preview without sound' : '') + '. Run <code>make demo</code> ' +
    '(or <code>talkinghead repro</code>) to write it.';
  if (video.poster) {
    var img = document.createElement('img');
    img.src = video.poster; img.alt = 'preview of ' + source.getAttribute('src');
    figure.replaceChild(img, video);
    figure.insertBefore(note, img.nextSibling);
  } else {
    figure.replaceChild(note, video);
  }
}
"""


# ---------------------------------------------------------------------------------------------------------------
# metrics

def readable(metrics: Any) -> Any:
    """Metrics in the units the page shows, also from runs before the units were in the names: lve (m²) -> lve_mm2,
    nme / lip_nme (fractions of the inter-ocular distance) -> nme_pct / lip_nme_pct."""
    if not isinstance(metrics, dict):
        return metrics
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "lve" and isinstance(value, (int, float)):
            out["lve_mm2"] = value * 1e6
        elif key in ("nme", "lip_nme") and isinstance(value, (int, float)):
            out[f"{key}_pct"] = value * 100.0
        else:
            out[key] = readable(value)
    return out


def load_metrics(path: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return readable(metrics) if isinstance(metrics, dict) else None


def find_metrics(reports: Path) -> dict[str, dict[str, Path]]:
    """{presenter: {stage: reports/<stage>/<presenter>/metrics.json}} for every stage folder holding metrics or
    images (metrics.json may be missing, e.g. in a project whose stages ran before they wrote one)."""
    found: dict[str, dict[str, Path]] = {}
    for folder in sorted(p for p in reports.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
        if folder.parent.name.startswith("crossdrive") or folder.parent.name == "headmodel":
            continue
        if (folder / "metrics.json").exists() or any(folder.glob("*.png")) or any(folder.glob("examples/*.png")):
            found.setdefault(folder.name, {})[folder.parent.name] = folder / "metrics.json"
    return found


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"
    if value is None:
        return "n/a"
    return html.escape(str(value))


def _metric_info(key: str) -> tuple[str, str, str]:
    """(label, unit, better) of a metric key, else of its last two or last dotted parts; blanks when unknown."""
    parts = key.split(".")
    return METRICS.get(key) or METRICS.get(".".join(parts[-2:])) or METRICS.get(parts[-1], ("", "", ""))


def _metric_cells(key: str) -> tuple[str, str, str]:
    """(name cell, unit cell, better cell) of a metric row."""
    label, unit, better = _metric_info(key)
    name = f"{html.escape(label)} <code class=muted>{html.escape(key)}</code>" if label else html.escape(key)
    return (f"<td>{name}</td>", f'<td class="unit">{html.escape(unit)}</td>',
            f'<td class="better">{BETTER.get(better, "")}</td>')


def _best(values: list[Any], better: str) -> int | None:
    numbers = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(numbers) < 2 or better not in BETTER:
        return None
    key = {"higher": lambda iv: -iv[1], "lower": lambda iv: iv[1], "0": lambda iv: abs(iv[1]),
           "1": lambda iv: abs(iv[1] - 1.0)}[better]
    return min(numbers, key=key)[0]


def comparison_table(systems: dict[str, dict[str, Any]]) -> str:
    """Rows: metrics; columns: unit, which direction is better, then one column per system (model first, then the
    baselines); the best value of each row in bold."""
    names = list(dict.fromkeys(m for g in systems.values() for m in g if not isinstance(g.get(m), dict)))
    head = "".join(f'<th title="{html.escape(k)}">{html.escape(SYSTEM_NAMES.get(k, k.replace("baseline_", "")))}'
                   f'<br><code class=muted>{html.escape(k)}</code></th>' for k in systems)
    rows = [f"<tr><th>metric</th><th>unit</th><th>better</th>{head}</tr>"]
    for name in names:
        values = [g.get(name) for g in systems.values()]
        best = _best(values, _metric_info(name)[2])
        cells = "".join(f'<td class="num{" best" if i == best else ""}">{_format(v)}</td>'
                        for i, v in enumerate(values))
        rows.append("<tr>" + "".join(_metric_cells(name)) + cells + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def scalar_table(scalars: dict[str, Any]) -> str:
    rows = ["<tr><th>metric</th><th>unit</th><th>better</th><th>value</th></tr>"]
    for key, value in scalars.items():
        rows.append("<tr>" + "".join(_metric_cells(key)) + f'<td class="num">{_format(value)}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def gan_systems(metrics: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """GAN metrics (gan_full_psnr, composite_mouth_ssim, ...) as {gan: {...}, composite: {...}} and the rest."""
    systems: dict[str, dict[str, Any]] = {"gan": {}, "composite": {}}
    rest = {}
    for key, value in metrics.items():
        system, _, metric = key.partition("_")
        if system in systems and metric:
            systems[system][metric] = value
        elif not key.startswith("gain_"):  # the gains are the difference of the two columns
            rest[key] = value
    return systems, rest


def metrics_table(metrics: dict[str, Any]) -> str:
    """Model vs baselines as columns where the stage compares systems, else a metric / value table."""
    metrics = readable(metrics)
    if any(k.startswith("gan_") for k in metrics):
        systems, rest = gan_systems(metrics)
        return comparison_table(systems) + scalar_table(rest)
    groups = {k: v for k, v in metrics.items() if isinstance(v, dict) and (k == "model" or k.startswith("baseline"))}
    if "model" in groups:
        scalars = flatten({k: v for k, v in metrics.items() if k not in groups})
        return comparison_table(groups) + (scalar_table(scalars) if scalars else "")
    return scalar_table(flatten(metrics))


# ---------------------------------------------------------------------------------------------------------------
# curves (inline SVG: no plotting library, no files)

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def read_csv_columns(path: Path) -> dict[str, list[float]]:
    """A numeric CSV as {column: values}; {} if missing or unreadable."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def svg_chart(x: list[float], series: dict[str, list[float]], xlabel: str, ylabel: str,
              width: int = 760, height: int = 230) -> str:
    """A line chart of one or more series over a shared x, with axis ticks and a legend."""
    left, right, top, bottom = 60, 150, 12, 36
    points = [v for ys in series.values() for v in ys if math.isfinite(v)]
    if not x or not points:
        return ""
    x0, x1 = min(x), max(x)
    y0, y1 = min(points), max(points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pw, ph = width - left - right, height - top - bottom
    sx = lambda v: left + (v - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda v: top + (1 - (v - y0) / (y1 - y0)) * ph  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        xv = x0 + (x1 - x0) * i / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>'
                     f'<text x="{sx(xv):.1f}" y="{top + ph + 14}" text-anchor="middle">{xv:.4g}</text>')
    for k, (name, ys) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        path = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, ys) if math.isfinite(b))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{path}"/>'
                     f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{top + 10 + 16 * k}" '
                     f'y2="{top + 10 + 16 * k}" stroke="{color}" stroke-width="2"/>'
                     f'<text x="{left + pw + 34}" y="{top + 14 + 16 * k}">{html.escape(name)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{html.escape(xlabel)}</text>'
                 f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
                 f"{html.escape(ylabel)}</text></svg>")
    return "".join(parts)


def curve_figure(path: Path, x_key: str, keys: dict[str, str], xlabel: str, ylabel: str, caption: str,
                 legacy: dict[str, tuple[str, float]] | None = None) -> str:
    """A figure with the chart of ``keys`` ({column: legend}) of a CSV over ``x_key``; '' when the data are absent.
    ``legacy``: {column: (its name in older CSVs, factor to this unit)}."""
    columns = read_csv_columns(path)
    if x_key not in columns:
        return ""
    series = {}
    for key, legend in keys.items():
        old, factor = (legacy or {}).get(key, (key, 1.0))
        if key in columns:
            series[legend] = columns[key]
        elif old in columns:
            series[legend] = [v * factor for v in columns[old]]
    chart = svg_chart(columns[x_key], series, xlabel, ylabel)
    if not chart:
        return ""
    return f"<figure>{chart}<figcaption>{html.escape(caption)} (data: {html.escape(path.name)})</figcaption></figure>"


# ---------------------------------------------------------------------------------------------------------------
# media

def make_preview(video: Path) -> Path | None:
    """A small animated WebP next to ``video`` (first seconds, low resolution, no sound), remade when the video is
    newer; None when neither exists. Committed with the page, so a fresh clone shows something."""
    preview = video.with_name(video.stem + PREVIEW_SUFFIX)
    if not video.exists():
        return preview if preview.exists() else None
    if preview.exists() and preview.stat().st_mtime >= video.stat().st_mtime:
        return preview
    try:
        import av
        from PIL import Image

        images = []
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 25)
            step = max(1, round(rate / PREVIEW_FPS))
            for i, frame in enumerate(container.decode(stream)):
                if i / rate >= PREVIEW_SECONDS:
                    break
                if i % step == 0:
                    image = frame.to_image()
                    height = round(image.height * PREVIEW_WIDTH / image.width)
                    images.append(image.resize((PREVIEW_WIDTH, height), Image.LANCZOS))
        if not images:
            return None
        with atomic_path(preview) as tmp:
            images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:],
                           duration=round(1000 * step / rate), loop=0, quality=45, method=4)
    except Exception:  # a preview is a convenience: a video PyAV/Pillow cannot read leaves the note alone
        return preview if preview.exists() else None
    return preview


def video_figure(video: Path, reports: Path, caption: str) -> str:
    """A player with the preview as its poster; a missing video turns into the preview and a note (SCRIPT)."""
    rel = video.relative_to(reports).as_posix()
    preview = make_preview(video)
    poster = f' poster="{html.escape(preview.relative_to(reports).as_posix())}"' if preview else ""
    return (f'<figure><video controls preload="metadata"{poster}>'
            f'<source src="{html.escape(rel)}" type="video/mp4" onerror="videoMissing(this)"></video>'
            f'<figcaption><a href="{html.escape(rel)}">{html.escape(rel)}</a>: {caption}</figcaption></figure>')


def image_figure(image: Path, reports: Path, caption: str, columns: list[str] | None = None) -> str:
    """An image with a caption; ``columns``: labels over its columns (sample grids)."""
    rel = image.relative_to(reports).as_posix()
    labels = ("<div class=cols>" + "".join(f"<span>{html.escape(c)}</span>" for c in columns) + "</div>"
              if columns else "")
    return (f'<figure><div class=grid>{labels}<img src="{html.escape(rel)}" alt="{html.escape(caption)}" '
            f'loading="lazy"></div><figcaption>{html.escape(caption)}</figcaption></figure>')


GRID_COLUMNS = {"heldout_samples.png": ["composite (GAN input)", "generated", "real"],
                "heldout_mouths.png": ["composite mouth", "generated mouth", "real mouth"],
                "strip.png": ["real", "generated"]}
COMPOSITE_COLUMNS = ["real crop", "render (lip model's expression)", "lower-face mask", "composite, mouth box"]
COMPOSITE_EXAMPLES = 3  # of the composites stage's example strips (the page stays short)
IMAGE_CAPTIONS = {"strip.png": "held-out frames: real | generated pairs (speak on the held-out speech)",
                  "mouth_opening.png": "mouth opening over time",
                  "heldout_samples.png": "GAN on held-out frames, one frame per row",
                  "heldout_mouths.png": "the same frames' mouth crops (enlarged)"}


# ---------------------------------------------------------------------------------------------------------------
# sections

def summary_section(found: dict[str, dict[str, Path]]) -> str:
    """One row per presenter: each stage's headline number, the baseline in brackets."""
    if not found:
        return ""
    header = ("<tr><th>presenter</th><th>fit NME<br>% inter-ocular ↓</th><th>lip r<br>model (ridge) ↑</th>"
              "<th>LVE mm² ↓<br>model (still face)</th><th>GAN mouth PSNR dB ↑<br>model (composite)</th>"
              "<th>speak LMD px ↓<br>model (still face)</th><th>speak mouth r ↑<br>model (still face)</th></tr>")
    rows = []

    def get(metrics: dict | None, *keys: str) -> Any:
        for key in keys:
            if not isinstance(metrics, dict):
                return None
            metrics = metrics.get(key)
        return metrics

    def pair(a: Any, b: Any) -> str:
        return f'<td class="num">{_format(a)} <span class=muted>({_format(b)})</span></td>'

    for name, stages in found.items():
        m = {stage: load_metrics(path) for stage, path in stages.items()}
        rows.append(
            f'<tr><td><a href="#{html.escape(name)}">{html.escape(name)}</a></td>'
            f'<td class="num">{_format(get(m.get("fit"), "nme_pct"))}</td>'
            + pair(get(m.get("lip"), "model", "mouth_opening_r"),
                   get(m.get("lip"), "baseline_ridge", "mouth_opening_r"))
            + pair(get(m.get("lip"), "model", "lve_mm2"), get(m.get("lip"), "baseline_static_mean", "lve_mm2"))
            + pair(get(m.get("gan"), "gan_mouth_psnr"), get(m.get("gan"), "composite_mouth_psnr"))
            + pair(get(m.get("eval"), "model", "lmd"), get(m.get("eval"), "baseline_static", "lmd"))
            + pair(get(m.get("eval"), "model", "mouth_opening_r"), get(m.get("eval"), "baseline_static",
                                                                      "mouth_opening_r"))
            + "</tr>")
    return ("<h2>Summary across presenters</h2><p>Held-out tail of each presenter; the baseline in brackets; "
            "the arrow says which direction is better.</p><table>" + header + "".join(rows) + "</table>")


def lip_training_section(reports: Path) -> str:
    metrics = load_metrics(reports / "lip" / "train_metrics.json")
    curve = curve_figure(reports / "lip" / "val_loss.csv", "step", {"val_loss": "validation loss"}, "training step",
                         "loss", "lip model: validation loss during training (the checkpoint is the lowest point)")
    if metrics is None and not curve:
        return ""
    table = scalar_table(flatten(metrics)) if metrics else ""
    return ("<h2>Lip model training (all presenters)</h2><p><code>val_loss_relative_to_static</code>: the training "
            "loss on each presenter's validation slice over a still face's; below 1 is better. The GAN's loss curves "
            "are under each presenter (every run's in MLflow: <code>make ui</code>).</p>" + table + curve)


def presenter_section(name: str, stages: dict[str, Path], reports: Path) -> str:
    parts = [f'<h2 id="{html.escape(name)}">Presenter <code>{html.escape(name)}</code></h2>']
    for stage in sorted(stages, key=_stage_key):
        path = stages[stage]
        folder = path.parent
        parts.append(f"<h3>{html.escape(STAGE_TITLES.get(stage, stage))}</h3>")
        if path.exists():
            metrics = load_metrics(path)
            parts.append(metrics_table(metrics) if metrics is not None
                         else f'<p class="muted">{html.escape(str(path))}: unreadable</p>')
        if stage == "fit":
            parts.append(curve_figure(folder / "fit_error.csv", "frame", {"nme_pct": "all landmarks",
                                                                          "lip_nme_pct": "lip landmarks"},
                                      "frame", "NME, % inter-ocular", "fit error per frame (lower is better)",
                                      legacy={"nme_pct": ("nme", 100.0), "lip_nme_pct": ("lip_nme", 100.0)}))
            overlays = sorted((folder / "overlays").glob("*.png"))[:6]
            if overlays:
                parts.append("<figure class=gallery>" + "".join(
                    f'<img src="{html.escape(p.relative_to(reports).as_posix())}" alt="{html.escape(p.stem)}" '
                    f'loading="lazy">' for p in overlays)
                    + "<figcaption>fit overlays: fitted mesh (green), fitted landmarks (red), FaceMesh targets "
                      "(cyan)</figcaption></figure>")
        if stage == "gan":
            parts.append(curve_figure(folder / "losses.csv", "step", {"g_loss": "generator", "g_loss_ema":
                                                                      "generator, smoothed", "l1": "L1"},
                                      "training step", "loss", "GAN generator loss (training stops at "
                                      "gan.target_loss of the smoothed loss)"))
            parts.append(curve_figure(folder / "losses.csv", "step", {"d_face": "face discriminator",
                                                                      "d_mouth": "mouth discriminator"},
                                      "training step", "loss", "GAN discriminator losses"))
        if stage == "eval":
            parts.append(curve_figure(folder / "mouth_opening.csv", "time_s", {"real": "real video",
                                                                               "generated": "generated (speak)"},
                                      "time (s), held-out tail", "mouth opening",
                                      "mouth opening over time: real vs generated (higher r: closer)"))
        # the composites stage keeps its example strips in examples/ (metrics.json sits beside that output)
        images = sorted(folder.glob("*.png")) + sorted(folder.glob("examples/*.png"))
        if stage == "composites":
            images = [images[i] for i in sorted({round(k * (len(images) - 1) / max(COMPOSITE_EXAMPLES - 1, 1))
                                                 for k in range(min(COMPOSITE_EXAMPLES, len(images)))})]
        for image in images:
            if stage == "eval" and image.name == "mouth_opening.png" and (folder / "mouth_opening.csv").exists():
                continue  # drawn above from its data, real and generated on one chart
            columns = COMPOSITE_COLUMNS if stage == "composites" else GRID_COLUMNS.get(image.name)
            parts.append(image_figure(image, reports, IMAGE_CAPTIONS.get(image.name, image.stem.replace("_", " ")),
                                      columns))
        for video in sorted(folder.glob("*.mp4")):
            extra = "real | generated, held-out tail" if video.name == "side_by_side.mp4" else video.stem
            parts.append(video_figure(video, reports, extra))
        if stage == "eval" and not (folder / "side_by_side.mp4").exists() and (
                folder / ("side_by_side" + PREVIEW_SUFFIX)).exists():
            parts.append(video_figure(folder / "side_by_side.mp4", reports, "real | generated, held-out tail"))
    return "\n".join(parts)


def crossdrive_section(reports: Path, folder: str = "crossdrive",
                       title: str = "Lip sync driven by other speakers") -> str:
    """Lip sync on voices a presenter never had (stage crossdrive): a row per speaker, the summary, the curves."""
    path = reports / folder / "metrics.json"
    head = f"<h2>{html.escape(title)}</h2>"
    if not path.exists():
        return head + '<p class="muted">No crossdrive metrics yet: onboard a second presenter and run ' \
                      "<code>talkinghead repro</code>.</p>"
    metrics = json.loads(path.read_text())
    if not metrics.get("speakers"):
        return head + f'<p class="muted">{html.escape(metrics.get("note", "no pairs"))}</p>'
    cell = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    rows = "".join(
        f"<tr><td>{html.escape(name)}{' (generated)' if m['synthetic'] else ''}</td><td class=num>{m['frames']}</td>"
        f"<td class=num>{m['faces']}</td><td class=num>{cell(m['r'], '+.2f')}</td>"
        f"<td class=num>{cell(m['r_voiced'], '+.2f')}</td><td class=num>{m['best_lag']:+d}</td>"
        f"<td class=num>{cell(m['ridge_r'], '+.2f')}</td></tr>" for name, m in metrics["speakers"].items())
    s = metrics["summary"]
    return (head + f"<p>Each speaker's test speech ({html.escape(metrics.get('encoder', '?'))} features; its held-out "
            "tail, or its whole recording for a lip model trained without it) drives every other presenter's face; "
            "the generated mouth opening is correlated with the mouth of the person who spoke. <i>ridge</i>: a "
            "linear map from the same features, fitted on the same frames.</p>"
            "<table><tr><th>speaker</th><th>test frames</th><th>faces driven</th><th>r ↑</th><th>r voiced ↑</th>"
            f"<th>best lag (frames, 0 best)</th><th>ridge r ↑</th></tr>{rows}</table>"
            f"<p>Real speakers: {s['real_speakers']}; median r {cell(s['median_r'], '+.2f')} (voiced "
            f"{cell(s['median_r_voiced'], '+.2f')}), ridge {cell(s['median_ridge_r'], '+.2f')}; best lag within "
            f"&plusmn;1 frame for {s['speakers_best_lag_within_1']}.</p>"
            f'<img src="{folder}/mouth_opening.png" alt="real vs generated mouth opening per speaker">')


def demo_section(reports: Path) -> str:
    demo = reports / DEMO_VIDEO
    parts = ["<h2>Demo</h2>"]
    if demo.exists() or demo.with_name(demo.stem + PREVIEW_SUFFIX).exists():
        sentence = _demo_sentence()
        parts.append(video_figure(demo, reports, "the demo presenter says a sentence it never heard in training, in a "
                                  "held-out voice" + (f": <q>{html.escape(sentence)}</q>" if sentence else "") + "."))
    else:
        parts.append('<p class="note">No demo video yet: run <code>make demo</code>.</p>')
    return "".join(parts)


def build_report(reports: Path = REPORTS) -> str:
    """The HTML text of reports/index.html (links relative to ``reports``)."""
    found = find_metrics(reports)
    commit = git_commit()
    body = [f"<h1>talkinghead report</h1><p class=\"muted\">generated "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from git commit <code>{html.escape(commit[:12])}"
            "</code>; the numbers are those of the last pipeline run in this checkout (reports/, "
            "<code>dvc metrics show</code>); runs and registered models: <code>make ui</code>.</p>",
            demo_section(reports)]
    if found:
        body.append("<p>Presenters: " + ", ".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in found)
                    + "</p>")
        body.append(summary_section(found))
    else:
        body.append('<p class="muted">No metrics yet: run <code>talkinghead repro</code>.</p>')
    body.append(lip_training_section(reports))
    body.append(crossdrive_section(reports))
    if (reports / "crossdrive_loo" / "metrics.json").exists():  # written by `make real-clips`
        body.append(crossdrive_section(reports, "crossdrive_loo",
                                       "Lip sync driven by other speakers: leave-one-out lip models, whole recordings"))
    for name, stages in found.items():
        body.append(presenter_section(name, stages, reports))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>talkinghead report</title>"
            f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _demo_sentence() -> str | None:
    try:
        from .stages.demo import UNSEEN_SENTENCE
    except ImportError:
        return None
    return str(UNSEEN_SENTENCE)


def write_report(reports: Path = REPORTS) -> Path:
    out = reports / "index.html"
    text = build_report(reports)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out


def report_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead report", description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=Path, default=REPORTS, help="reports folder (default: reports)")
    args = parser.parse_args(argv)
    out = write_report(args.reports)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(report_main())
