"""align.encoder phones: Whisper transcript + pocketsphinx forced alignment -> viseme curves. Phone times against
Flite's own (``-psdur``), long audio in windows, untranscribable audio as silence, one clear error for a bad model
folder, the whisper+phones concatenation."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.demo_speech import Phoneme, speak
from talkinghead.errors import InputError
from talkinghead.speech.features import AlignParams, features_for_audio
from talkinghead.speech.phones import PHONE_FEATURES, is_loop, phone_features, speech_phones, tokens_to_text

from configs import project_config

RATE = 16000
SENTENCE = "Peter bought a bag of plums at the market, but Bob ate most of them before lunch."

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def start_errors(truth: list[Phoneme], found: list[Phoneme]) -> tuple[np.ndarray, float]:
    """For every spoken true phone: the start time error (s) of the nearest found phone, and the share of true phones
    whose nearest found phone is the same phone."""
    spoken = [p for p in found if p.symbol != "_"]
    starts = np.array([p.start_s for p in spoken])
    errors, same = [], 0
    for p in truth:
        if p.symbol == "_":
            continue
        k = int(np.argmin(np.abs(starts - p.start_s)))
        errors.append(starts[k] - p.start_s)
        same += spoken[k].symbol == p.symbol
    return np.array(errors), same / len(errors)


@pytest.mark.parametrize("voice", ["flite:slt", "flite:awb"])
def test_phone_starts_match_the_synthesisers_own_within_a_frame(voice):
    samples, truth = speak(SENTENCE, voice, 155)
    errors, same = start_errors(truth, speech_phones(samples, None))
    assert np.median(np.abs(errors)) < 0.02, errors  # one video frame is 40 ms
    assert np.percentile(np.abs(errors), 90) < 0.06, errors
    assert same > 0.7, same


def test_long_audio_is_aligned_window_by_window():
    """Speech that starts past Whisper's 30 s window is found there, at its own time."""
    samples, truth = speak(SENTENCE, "flite:slt", 155)
    offset = 31.0
    long = np.concatenate([np.zeros(int(offset * RATE), np.float32), samples])
    found = [p for p in speech_phones(long, None) if p.start_s >= offset - 0.5]
    errors, same = start_errors([Phoneme(p.symbol, p.start_s + offset, p.end_s + offset) for p in truth], found)
    assert np.median(np.abs(errors)) < 0.02 and same > 0.7, (errors, same)


def test_audio_without_english_speech_gives_silence_like_features():
    """A chord, noise and German speech: no crash, finite features of the right shape; nothing Whisper can transcribe
    (chord, noise) is a closed silent mouth, i.e. constant columns, which normalise to 0."""
    t = np.arange(RATE * 3) / RATE
    chord = (0.2 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 277 * t) + np.sin(2 * np.pi * 330 * t)))
    noise = np.random.default_rng(1).normal(0, 0.1, RATE * 3)
    params = project_config(AlignParams, "align", encoder="phones")
    for audio in (chord, noise):
        feats = features_for_audio(audio.astype(np.float32), 75, 25, params)
        assert feats.shape == (75, 5, len(PHONE_FEATURES)) and not np.any(feats)
    german, _ = speak("Guten Morgen, wie geht es Ihnen heute? Das Wetter ist schön.", "de", 155)
    feats = features_for_audio(german, int(len(german) / RATE * 25), 25, params)
    assert feats.shape[1:] == (5, len(PHONE_FEATURES)) and np.isfinite(feats).all()


def test_missing_model_folder_names_the_parameter(tmp_path):
    params = project_config(AlignParams, "align", encoder="phones", whisper_model=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="align.whisper_model.*no model.bin"):
        features_for_audio(np.zeros(RATE, np.float32), 25, 25, params)


def test_whisper_plus_phones_is_both_side_by_side(monkeypatch):
    """The Whisper columns, then the phone columns. The phones are fixed here: tiny.en's greedy timestamps can move
    by a step when earlier work in the process leaves different float rounding behind, and that is not this test."""
    from talkinghead.speech import phones as phones_module

    samples, truth = speak("Good morning, my friend.", "en-us", 155)
    monkeypatch.setattr(phones_module, "speech_phones", lambda s, model: truth)
    n = int(len(samples) / RATE * 25)
    both = features_for_audio(samples, n, 25, project_config(AlignParams, "align", encoder="whisper+phones"))
    whisper = features_for_audio(samples, n, 25, project_config(AlignParams, "align", encoder="whisper"))
    phones = features_for_audio(samples, n, 25, project_config(AlignParams, "align", encoder="phones"))
    assert both.shape == (n, 5, 384 + len(PHONE_FEATURES))
    assert project_config(AlignParams, "align", encoder="whisper+phones").feature_dim == both.shape[2]
    assert project_config(AlignParams, "align", encoder="phones").feature_dim == len(PHONE_FEATURES)
    np.testing.assert_allclose(both[..., :384], whisper, atol=1e-5)
    np.testing.assert_allclose(both[..., 384:], phones, atol=1e-5)
    assert np.abs(phones).max() > 1.0  # real speech moves the curves


def test_phone_features_close_the_lips_on_m_and_open_the_jaw_on_a():
    phones = [Phoneme("_", 0.0, 0.2), Phoneme("m", 0.2, 0.3), Phoneme("A:", 0.3, 0.5), Phoneme("_", 0.5, 1.0)]
    times = np.array([0.05, 0.25, 0.4, 0.9])
    f = phone_features(phones, times)
    assert f.shape == (4, len(PHONE_FEATURES)) and f.dtype == np.float32
    jaw, closure, opening, speaking = (f[:, PHONE_FEATURES.index(c)] for c in
                                       ("jaw_open", "closure", "mouth_open", "speaking"))
    assert closure[1] > 0.8 and jaw[2] > 0.6 and opening[2] > 0.5 and opening[1] < 0.1
    np.testing.assert_array_equal(speaking, [0, 1, 1, 0])
    assert not phone_features([], times).any() and not phone_features([Phoneme("_", 0, 1)], times).any()


def test_transcript_tokens_and_loops():
    assert tokens_to_text(["<|startoftranscript|>", "ĠHello", ",", "Ġworld", "<|endoftext|>"]) == "Hello, world"
    assert tokens_to_text(["Ġcaf", "Ã©"]) == "café"  # byte-level BPE: é is two byte tokens
    assert is_loop("I'm not going to do that. " * 7)
    assert not is_loop("Pretty soon a woman came along, carrying a folded umbrella as a walking stick.")


def test_streaming_refuses_a_phones_lip_model(tiny_presenter, tmp_path):
    """Phone timings need a transcript of the whole utterance: the streaming lip model says so instead of failing
    somewhere inside."""
    import torch

    from talkinghead.paths import LIP_CHECKPOINT
    from talkinghead.streaming import StreamingLip
    from talkinghead.tensorfile import load_checkpoint

    payload = load_checkpoint(tiny_presenter / LIP_CHECKPOINT)
    payload["align"] = {**payload["align"], "encoder": "phones"}
    torch.save(payload, tmp_path / "lip.pt")
    with pytest.raises(InputError, match="align.encoder 'phones', which needs whole utterances"):
        StreamingLip(tmp_path / "lip.pt", "tiny", 25, history_s=2.0, lookahead_frames=3)


def test_phones_lead_moves_the_curves_ahead_of_the_sound():
    """align.phones_lead_s = 0.12: the curve at a state is the one 6 states (120 ms) later without the lead."""
    from talkinghead.lipmetrics import pearson_r
    from talkinghead.speech.features import encoder_states

    samples, _ = speak(SENTENCE, "flite:slt", 155)
    plain = encoder_states(samples, project_config(AlignParams, "align", encoder="phones", phones_lead_s=0.0))
    ahead = encoder_states(samples, project_config(AlignParams, "align", encoder="phones", phones_lead_s=0.12))
    opening = PHONE_FEATURES.index("mouth_open")
    assert pearson_r(ahead[:-6, opening], plain[6:, opening]) > 0.99
    assert pearson_r(ahead[:, opening], plain[:, opening]) < 0.9
