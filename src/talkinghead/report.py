"""`python -m talkinghead.report` / `talkinghead report`: reports/index.html, one static page for the whole project.

For every presenter: the metrics of every stage (each reports/<stage>/<NAME>/metrics.json), the plots and images
those stages left next to it (*.png), the evaluation's frame strip (real | generated pairs) and side-by-side video;
then the demo video reports/demo/demo.mp4. Static HTML with relative links and inline CSS only (no external assets),
so the reports folder can be zipped and opened anywhere.
"""

from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .paths import REPORTS
from .tracking import flatten

STAGE_ORDER = ["extract", "landmarks", "fit", "align", "lip", "composites", "gan", "eval"]
DEMO_VIDEO = Path("demo") / "demo.mp4"
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; margin: .3em 0; } video { max-width: 100%; }
.muted { color: #777; } figure { margin: .5em 0 1.2em; } figcaption { font-size: .85em; color: #555; }
"""


def find_metrics(reports: Path) -> dict[str, dict[str, Path]]:
    """{presenter: {stage: reports/<stage>/<presenter>/metrics.json}} for every stage folder holding metrics or
    images (metrics.json may be missing, e.g. in a project whose stages ran before they wrote one)."""
    found: dict[str, dict[str, Path]] = {}
    for folder in sorted(p for p in reports.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
        if (folder / "metrics.json").exists() or any(folder.glob("*.png")) or any(folder.glob("examples/*.png")):
            found.setdefault(folder.name, {})[folder.parent.name] = folder / "metrics.json"
    return found


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "n/a"
    return html.escape(str(value))


def metrics_table(metrics: dict[str, Any]) -> str:
    """A two-column table of flattened metrics; evaluation metrics (model vs baselines) as a comparison table."""
    groups = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    rows = []
    if "model" in groups:  # evaluate: one column per system
        names = sorted({m for g in groups.values() for m in g})
        head = "".join(f"<th>{html.escape(k)}</th>" for k in groups)
        rows.append(f"<tr><th>metric</th>{head}</tr>")
        for name in names:
            cells = "".join(f'<td class="num">{_format(g.get(name))}</td>' for g in groups.values())
            rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    else:
        scalars = flatten(metrics)
    for key, value in scalars.items():
        rows.append(f'<tr><td>{html.escape(key)}</td><td class="num">{_format(value)}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def presenter_section(name: str, stages: dict[str, Path], reports: Path) -> str:
    parts = [f'<h2 id="{html.escape(name)}">Presenter <code>{html.escape(name)}</code></h2>']
    for stage in sorted(stages, key=_stage_key):
        path = stages[stage]
        folder = path.parent
        parts.append(f"<h3>{html.escape(stage)}</h3>")
        if path.exists():
            try:
                metrics = json.loads(path.read_text())
                parts.append(metrics_table(metrics) if isinstance(metrics, dict)
                             else f"<pre>{html.escape(str(metrics))}</pre>")
            except (OSError, json.JSONDecodeError) as exc:
                parts.append(f'<p class="muted">{html.escape(str(path))}: unreadable ({html.escape(str(exc))})</p>')
        for image in sorted(folder.glob("*.png")) + sorted(folder.glob("examples/*.png")):
            rel = image.relative_to(reports).as_posix()
            caption = "real | generated (held-out frames)" if image.name == "strip.png" else image.stem.replace("_", " ")
            parts.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}" loading="lazy">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for video in sorted(folder.glob("*.mp4")):
            rel = video.relative_to(reports).as_posix()
            parts.append(f'<figure><video controls preload="metadata" src="{html.escape(rel)}"></video>'
                         f'<figcaption><a href="{html.escape(rel)}">{html.escape(video.name)}</a>'
                         f"{' (real | generated, held-out tail)' if video.name == 'side_by_side.mp4' else ''}"
                         f"</figcaption></figure>")
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
            "<table><tr><th>speaker</th><th>test frames</th><th>faces driven</th><th>r</th><th>r voiced</th>"
            f"<th>best lag</th><th>ridge r</th></tr>{rows}</table>"
            f"<p>Real speakers: {s['real_speakers']}; median r {cell(s['median_r'], '+.2f')} (voiced "
            f"{cell(s['median_r_voiced'], '+.2f')}), ridge {cell(s['median_ridge_r'], '+.2f')}; best lag within "
            f"&plusmn;1 frame for {s['speakers_best_lag_within_1']}.</p>"
            f'<img src="{folder}/mouth_opening.png" alt="real vs generated mouth opening per speaker">')


def build_report(reports: Path = REPORTS) -> str:
    """The HTML text of reports/index.html (links relative to ``reports``)."""
    found = find_metrics(reports)
    body = [f"<h1>talkinghead report</h1><p class=\"muted\">generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
            "</p>"]
    demo = reports / DEMO_VIDEO
    body.append("<h2>Demo</h2>")
    if demo.exists():
        rel = DEMO_VIDEO.as_posix()
        sentence = _demo_sentence()
        body.append(f'<video controls preload="metadata" src="{rel}"></video>'
                    f'<p><a href="{rel}">{rel}</a>: the demo presenter says a sentence it never heard in training, '
                    'in a held-out voice'
                    f"{': <q>' + html.escape(sentence) + '</q>' if sentence else ''}.</p>")
    else:
        body.append('<p class="muted">No demo video yet: run <code>make demo</code>.</p>')
    if found:
        body.append("<p>Presenters: " + ", ".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in found)
                    + "</p>")
    else:
        body.append('<p class="muted">No metrics yet: run <code>talkinghead repro</code>.</p>')
    body.append(crossdrive_section(reports))
    if (reports / "crossdrive_loo" / "metrics.json").exists():  # written by `make real-clips`
        body.append(crossdrive_section(reports, "crossdrive_loo",
                                       "Lip sync driven by other speakers: leave-one-out lip models, whole recordings"))
    for name, stages in found.items():
        body.append(presenter_section(name, stages, reports))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>talkinghead report</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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
