"""An independent check of stage sync on English recordings: where do the lips close around the p / b / m sounds?

For each presenter (default: every one in params.yaml that is not generated), the recording's audio *as recorded* is
transcribed by Whisper tiny.en and force-aligned to phones by pocketsphinx (``talkinghead.speech.phones``), and its
FaceMesh mouth opening (z-scored) is read at the centre of every bilabial (p, b, m) and every open vowel, shifted by
each lag in [-8, 8] frames. The lag where the vowels are most open relative to the bilabials is where this
recording's mouth meets its sound by the transcript; it carries the aligner's and the speaker's own lead, so compare
recordings with each other (and with sync.json's measured lag), not with zero. No model that learnt lip timing is
involved. Recordings without an English transcript print "-".

    PYTHONPATH=src .venv/bin/python scripts/bilabial_offsets.py [NAME ...]    # run from a project root
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from talkinghead.paths import PresenterPaths
from talkinghead.speech.phones import speech_phones
from talkinghead.testspeech import SAMPLE_RATE
from talkinghead.audio import read_wav
from talkinghead import schemas
from talkinghead.lipmetrics import mouth_opening_ratio

BILABIALS = {"p", "b", "m"}
OPEN_VOWELS = {"a", "aI", "aU", "A:", "a#", "0", "O:", "V", "E", "{"}
MAX_LAG = 8


def contrast_by_lag(name: str) -> tuple[dict[int, float], int, int]:
    """{lag: mean z-scored opening at open vowels - at bilabials}, and the number of each."""
    paths = PresenterPaths.of(name)
    frames = schemas.read_table(paths.frames_table, schemas.FRAMES)
    fps, n = float(frames["fps"].iloc[0]), len(frames)
    lmk = schemas.column_array(schemas.read_table(paths.landmarks, schemas.LANDMARKS), "lmk_crop")
    opening = mouth_opening_ratio(lmk.reshape(n, schemas.N_LANDMARKS, 3)).astype(np.float64)  # [N*1434] -> [N, 478, 3]
    z = (opening - opening.mean()) / max(opening.std(), 1e-12)
    samples, rate = read_wav(paths.audio)
    assert rate == SAMPLE_RATE, paths.audio
    phones = speech_phones(samples, None)
    centre = lambda p: int(round((p.start_s + p.end_s) / 2 * fps))  # noqa: E731
    closed = [centre(p) for p in phones if p.symbol in BILABIALS]
    opened = [centre(p) for p in phones if p.symbol in OPEN_VOWELS]
    curve = {}
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        c = [z[f + lag] for f in closed if 0 <= f + lag < n]
        o = [z[f + lag] for f in opened if 0 <= f + lag < n]
        if c and o:
            curve[lag] = float(np.mean(o) - np.mean(c))
    return curve, len(closed), len(opened)


def main(names: list[str]) -> None:
    if not names:
        names = [p for p in yaml.safe_load(Path("params.yaml").read_text())["presenters"]
                 if not PresenterPaths.of(p).visemes.is_file()]
    print("| presenter | bilabials / open vowels | lag of the largest vowel - bilabial contrast | "
          "sync.json measured lag |")
    print("|---|---|---|---|")
    for name in names:
        curve, n_closed, n_open = contrast_by_lag(name)
        sync_path = PresenterPaths.of(name).sync
        measured = json.loads(sync_path.read_text())["measured_lag"] if sync_path.exists() else "-"
        best = f"{max(curve, key=curve.get):+d} ({max(curve.values()):.2f})" if curve else "-"
        print(f"| {name} | {n_closed} / {n_open} | {best} | {measured} |")


if __name__ == "__main__":
    main(sys.argv[1:])
