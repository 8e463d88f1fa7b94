"""`talkinghead demo` (what `make demo` runs): the whole pipeline on the embedded demo presenter, then the demo
presenter says a sentence that was never in its training audio (reports/demo/demo.mp4), then the HTML report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .errors import InputError
from .synthesis import DEMO_PRESENTER

DEMO = DEMO_PRESENTER
DEMO_DIR = Path("reports/demo")


def demo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead demo", description=__doc__)
    parser.parse_args(argv)
    from .repro import repro
    from .params import load_config, load_params

    if DEMO not in (load_params().get("presenters") or []):
        raise InputError("params.yaml", f"presenter {DEMO!r} missing from `presenters`; add it back to run the demo")
    started = time.time()
    # crossdrive too, so `dvc status` is clean afterwards (with the demo alone it reports that it has no pair)
    code = repro([f"evaluate@{DEMO}", "crossdrive"])
    if code != 0:
        print(f"demo: `dvc repro evaluate@{DEMO} crossdrive` failed (exit {code}); see the stage output above")
        return code

    from .speak import speak_main
    from .stages.demo import UNSEEN_SENTENCE, DemoParams, synthesize_speech

    params = load_config(DemoParams, "demo")
    speech = DEMO_DIR / "unseen_sentence.wav"
    speech.parent.mkdir(parents=True, exist_ok=True)
    # a sentence it never said, in a voice it never heard (the first held-out voice when there is one)
    voice = (params.heldout_voices or params.voices)[0]
    synthesize_speech(UNSEEN_SENTENCE, speech, voice=voice, wpm=params.words_per_minute)
    code = speak_main(["--presenter", DEMO, "--audio", str(speech), "--out", str(DEMO_DIR / "demo.mp4")])
    if code:
        return code

    from .report import report_main

    report_main([])
    minutes = (time.time() - started) / 60
    print(f"demo: done in {minutes:.1f} min -> {DEMO_DIR / 'demo.mp4'} (says: {UNSEEN_SENTENCE!r}); report: reports/index.html")
    return 0
