"""The embedded demo presenter: eSpeak phoneme timings, visemes, and a tiny generated video."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.audio import decode_audio, read_wav
from talkinghead.demo_speech import (TRAINING_SENTENCES, UNSEEN_SENTENCE, _normalise, mouth_opening, speak,
                                     synthesize_speech, viseme_curves)
from talkinghead.schemas import VISEMES, read_table

FPS = 25
SIZE = 192
TEXT = "Peter bought a map of the moon. Would you like some cheese?"
LEAD_FRAMES = 2  # the tiny demo's face runs this many frames ahead of its sound (demo.face_lead_s)


def test_phoneme_timings_are_monotonic_and_inside_the_audio(tmp_path):
    phonemes = synthesize_speech("Hello there, how are you today?", tmp_path / "s.wav", "en-us", 160)
    samples, rate = read_wav(tmp_path / "s.wav")
    duration = len(samples) / rate
    assert rate == 16000 and duration > 1.0
    starts = np.array([p.start_s for p in phonemes])
    ends = np.array([p.end_s for p in phonemes])
    assert len(phonemes) > 10
    assert np.all(np.diff(starts) >= 0) and np.all(ends > starts)
    assert starts[0] >= 0 and ends[-1] <= duration + 1e-6
    assert np.allclose(ends[:-1], starts[1:])  # contiguous
    # speech energy sits where eSpeak says the non-pause phonemes are
    voiced = [p for p in phonemes if not p.symbol.startswith("_")]
    inside = np.zeros(len(samples), bool)
    for p in voiced:
        inside[int(p.start_s * rate):int(p.end_s * rate)] = True
    energy_in = np.mean(samples[inside] ** 2)
    energy_out = np.mean(samples[~inside] ** 2) if (~inside).any() else 0.0
    assert energy_in > 10 * energy_out


def test_bilabials_close_the_lips_and_vowels_open_them():
    _, phonemes = speak("Bob bought a big map.", "en-us", 150)
    centres = np.array([0.5 * (p.start_s + p.end_s) for p in phonemes])
    vis = viseme_curves(phonemes, centres)
    opening = mouth_opening(vis)
    keys = [_normalise(p.symbol) for p in phonemes]
    bilabial = np.array([k in ("p", "b", "m") for k in keys])
    vowel = np.array([k in ("0", "O:", "a", "I", "A:", "O") for k in keys])
    assert bilabial.sum() >= 4 and vowel.sum() >= 3
    assert np.all(vis[bilabial, 3] > 0.6), vis[bilabial, 3]
    assert np.all(opening[bilabial] < 0.1), opening[bilabial]
    assert opening[vowel].min() > opening[bilabial].max() + 0.1
    assert opening[vowel].mean() > 0.3


def test_unseen_sentence_is_not_in_the_training_text():
    assert UNSEEN_SENTENCE not in " ".join(TRAINING_SENTENCES)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    from talkinghead.stages.demo import generate_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    video = generate_demo(out, seconds=3, size=SIZE, fps=FPS, seed=1, text=TEXT, face_lead_s=LEAD_FRAMES / FPS)
    return video, read_table(out / "visemes.parquet", VISEMES)


def _decode_frames(video):
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        info = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return info, np.stack(frames)


def test_generate_demo_writes_a_playable_video_with_audio_and_a_viseme_row_per_frame(tiny_demo):
    import av

    video, table = tiny_demo
    (codec, pix_fmt, width, height), frames = _decode_frames(video)
    assert (codec, pix_fmt, width, height) == ("h264", "yuv420p", SIZE, SIZE)
    with av.open(str(video)) as container:
        assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"
    n = len(frames)
    assert n > 2 * FPS
    assert len(table) == n and np.array_equal(table["frame"].to_numpy(), np.arange(n))
    assert np.allclose(table["time_s"].to_numpy(), np.arange(n) / FPS)
    audio = decode_audio(video)
    assert abs(len(audio) / 16000 - n / FPS) <= 1 / FPS
    # audio and table are in sync: frames the table calls pauses are quiet, the others are speech
    assert (table["phoneme"] != "").all()
    per_frame = 16000 // FPS
    rms = np.sqrt(np.mean(audio[: n * per_frame].reshape(n, per_frame) ** 2, axis=1))  # [n]
    pause = table["phoneme"].str.startswith("_").to_numpy()
    assert pause.any() and (~pause).any()
    assert np.median(rms[~pause]) > 10 * np.median(rms[pause]) + 1e-4
    assert table["jaw_open"].max() > 0.4 and table["closure"].max() > 0.6


def test_the_face_closes_the_lips_ahead_of_the_sound(tiny_demo):
    """demo.face_lead_s: the lips close for p, b and m LEAD_FRAMES before the sound of them (the table's phoneme
    column is the sound's), as a real mouth moves before it is heard."""
    _, table = tiny_demo
    bilabial = table["phoneme"].isin(["p", "b", "m"]).to_numpy(float)  # [n] what is heard
    closure = table["closure"].to_numpy()  # [n] what the face shows
    assert bilabial.sum() >= 4

    def r_at(lag: int) -> float:  # closure at frame i against the sound at frame i + lag
        n = len(closure)
        a, b = (closure[:n - lag], bilabial[lag:]) if lag >= 0 else (closure[-lag:], bilabial[:n + lag])
        return float(np.corrcoef(a, b)[0, 1])

    lags = range(-4, 5)
    assert max(lags, key=r_at) == LEAD_FRAMES


def test_mouth_is_more_open_in_frames_with_high_jaw_open(tiny_demo):
    from talkinghead.demo_face import detect_landmarks

    video, table = tiny_demo
    _, frames = _decode_frames(video)
    opening = table["mouth_open"].to_numpy()
    order = np.argsort(opening)
    closed, open_ = order[:6], order[-6:]
    assert opening[open_].min() > opening[closed].max() + 0.2

    def lip_gap(frame):
        lmk = detect_landmarks(frame)
        assert lmk is not None, "FaceMesh must find the demo face"
        eye_distance = np.linalg.norm(lmk[33, :2] - lmk[263, :2])
        return np.mean(lmk[[14, 87, 317], 1] - lmk[[13, 82, 312], 1]) / eye_distance

    gaps_closed = np.array([lip_gap(frames[i]) for i in closed])
    gaps_open = np.array([lip_gap(frames[i]) for i in open_])
    assert gaps_open.min() > gaps_closed.max(), (gaps_open, gaps_closed)
    # and pixel-level: the open mouth shows dark cavity pixels the closed one does not
    lmk = detect_landmarks(frames[open_[-1]])
    x0, y0 = np.floor(lmk[[61, 0], [0, 1]]).astype(int)
    x1, y1 = np.ceil(lmk[[291, 17], [0, 1]]).astype(int)
    dark = [(frames[i][y0:y1, x0:x1].mean(axis=2) < 70).mean() for i in (open_[-1], closed[0])]
    assert dark[0] > dark[1] + 0.05, dark


def test_main_reports_missing_params_as_input_error(tmp_path, monkeypatch, capsys):
    from talkinghead.stages.demo import main

    monkeypatch.chdir(tmp_path)  # no params.yaml here
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "params.yaml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_speech_script_rotates_voices_and_keeps_heldout_voices_for_the_end():
    from talkinghead.stages.demo import heldout_voice_start, speech_script

    voices, heldout = ("en-us", "en+m3"), ("en-gb-scotland+f5",)
    start = heldout_voice_start(14.0, 0.2)
    assert start == pytest.approx(0.8 * 14.0 - 3.0)
    samples, phonemes, spoken_by = speech_script(14.0, voices, 155, seed=0, heldout_voices=heldout,
                                                 heldout_from_s=start)
    assert len(samples) / 16000 >= 14.0 and phonemes[-1].end_s == pytest.approx(len(samples) / 16000, abs=0.01)
    before = [v for t, v in spoken_by if t < start]
    after = [v for t, v in spoken_by if t >= start]
    assert before[:2] == list(voices) and set(before) == set(voices)  # training voices in turn
    assert after and set(after) == set(heldout)  # the end of the timeline: only voices never trained on
    # the held-out tail (last 20 %) of the real timeline lies wholly inside the held-out voices' part
    assert 0.8 * len(samples) / 16000 >= min(t for t, v in spoken_by if v in heldout)


def test_flite_voice_gives_phoneme_timings_that_cover_its_audio():
    samples, phonemes = speak("Open your mouth wide and say ah.", "flite:slt", 155)
    duration = len(samples) / 16000
    assert 1.0 < duration < 4.0
    assert phonemes[0].start_s == 0.0 and phonemes[-1].end_s == pytest.approx(duration, abs=1e-6)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(phonemes, phonemes[1:]))  # contiguous
    symbols = [p.symbol for p in phonemes]
    assert "m" in symbols and "A:" in symbols  # CMU phones mapped onto the viseme table's mnemonics
    t = np.arange(0, duration, 0.04)
    opening = mouth_opening(viseme_curves(phonemes, t))
    assert opening.max() > 0.3 and opening[:3].max() < 0.05  # opens while speaking, rests in the lead-in pause


def test_unknown_flite_voice_is_one_clear_error():
    from talkinghead.errors import InputError

    with pytest.raises(InputError, match="flite voice 'nobody'"):
        speak("Hello.", "flite:nobody", 155)


def test_a_bad_demo_voice_names_the_parameter():
    from talkinghead.errors import InputError
    from talkinghead.stages.demo import speech_script

    with pytest.raises(InputError, match=r"params.yaml: demo.voices .*'nobody'"):
        speech_script(3.0, ("flite:nobody",), 155, seed=0)
