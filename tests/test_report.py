"""reports/index.html: works from a fresh clone (video previews, no dead players), units and directions in the tables,
model vs baselines as columns, a summary across presenters, curves from the stages' CSVs, the commit and the date."""

from __future__ import annotations

import json
import re

import numpy as np

from talkinghead.report import build_report, readable, write_report
from talkinghead.videoio import VideoWriter


def write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if isinstance(data, dict) else data)


def test_video_gets_a_committed_preview_and_no_dead_player_without_it(tmp_path):
    reports = tmp_path / "reports"
    video = reports / "demo" / "demo.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(video, 25.0, 320, 240) as writer:
        writer.write(rng.integers(0, 255, (50, 240, 320, 3), dtype=np.uint8))
    page = write_report(reports).read_text()
    preview = reports / "demo" / "demo_preview.webp"
    from PIL import Image

    with Image.open(preview) as image:
        assert image.n_frames > 5 and image.width == 240  # animated, low resolution
    assert preview.stat().st_size < 400_000
    assert 'poster="demo/demo_preview.webp"' in page and 'src="demo/demo.mp4"' in page
    video.unlink()  # a fresh clone: git ignores the MP4s, the preview is committed
    page = build_report(reports)
    assert 'poster="demo/demo_preview.webp"' in page  # the player shows the preview ...
    assert re.search(r'<source src="demo/demo.mp4" type="video/mp4" onerror="videoMissing\(this\)">', page)
    assert "function videoMissing" in page and "make demo" in page  # ... and turns into it plus a note on error
    preview.unlink()
    page = build_report(reports)
    assert "<video" not in page and "No demo video yet: run <code>make demo</code>" in page


def test_tables_have_units_directions_baseline_columns_and_a_summary(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    # a lip report from before the units were in the names (m^2): shown in mm^2
    write(reports / "lip" / "alice" / "metrics.json", {
        "heldout_frames": 100, "model": {"lve": 1.1e-5, "mouth_opening_r": 0.8, "av_offset": 0},
        "baseline_static_mean": {"lve": 3.1e-5, "mouth_opening_r": 0.0, "av_offset": 0},
        "baseline_ridge": {"lve_mm2": 12.0, "mouth_opening_r": 0.7, "av_offset": 1}})
    write(reports / "fit" / "alice" / "metrics.json", {"nme_pct": 0.19, "lip_nme_pct": 0.17})
    write(reports / "fit" / "alice" / "fit_error.csv", "frame,nme_pct,lip_nme_pct\n0,0.2,0.1\n1,0.3,0.2\n2,0.1,0.1\n")
    write(reports / "gan" / "alice" / "metrics.json", {"gan_mouth_psnr": 31.75, "composite_mouth_psnr": 23.17,
                                                       "gain_mouth_psnr": 8.58, "steps": 10.0})
    write(reports / "lip" / "val_loss.csv", "step,val_loss\n50,0.67\n100,0.55\n")
    monkeypatch.setattr("talkinghead.report.git_commit", lambda: "0123456789abcdef")
    page = build_report(reports)
    assert "git commit <code>0123456789ab</code>" in page and re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    lve_row = re.search(r"<tr><td>lip vertex error.*?</tr>", page).group(0)
    assert "mm²" in lve_row and "↓ lower" in lve_row
    assert re.findall(r'<td class="num[^"]*">([^<]*)</td>', lve_row) == ["11", "31", "12"]  # model, still face, ridge
    assert '<td class="num best">11</td>' in lve_row
    psnr_row = re.search(r"<tr><td>mouth PSNR.*?</tr>", page).group(0)
    assert "dB" in psnr_row and "31.75" in psnr_row and "23.17" in psnr_row  # GAN and composite side by side
    assert "Summary across presenters" in page and '<a href="#alice">alice</a>' in page
    assert page.count("<polyline") == 3  # lip validation loss; fit error: all and lip landmarks
    assert readable({"fit": {"nme": 0.0019}})["fit"]["nme_pct"] == 0.19


def test_nested_evaluate_metrics_are_labelled_by_their_last_part():
    from talkinghead.report import comparison_table, metrics_table

    page = metrics_table({"model": {"lmd": 0.8}, "appearance": {
        "model": {"open_mouth_psnr": 35.8}, "colour_detail": {"open_real": 0.58, "open_generated_ratio": 0.96},
        "colour_cast": {"open_generated": 3.1}},
        "temporal": {"generated_ratio": 1.0}})
    row = re.search(r"<tr><td>open-mouth PSNR.*?</tr>", page).group(0)
    assert "appearance.model.open_mouth_psnr" in row and "dB" in row and "↑ higher" in row
    ratio = re.search(r"<tr><td>colour detail, generated over real.*?</tr>", page).group(0)
    assert "×" in ratio and "1 best" in ratio
    cast = re.search(r"<tr><td>colour cast, generated open mouths vs real.*?</tr>", page).group(0)
    assert "appearance.colour_cast.open_generated" in cast and "↓ lower" in cast
    # a ratio to the real footage is best nearest one, from either side
    table = comparison_table({"a": {"generated_ratio": 1.3}, "b": {"generated_ratio": 0.9}})
    assert '<td class="num best">0.9</td>' in table and '<td class="num">1.3</td>' in table
