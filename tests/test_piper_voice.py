"""The packaged Piper voice (piper:joe): phonemes -> ids as Piper does, reproducible speech, phone timings from
forced alignment that drive the demo's face, and clear errors."""

import numpy as np
import pytest

from talkinghead import demo_speech, piper_voice, tts
from talkinghead.errors import InputError

SENTENCE = "Peter bought a bag of plums."


def test_phoneme_ids_follow_pipers_layout():
    id_map = {"_": [0], "^": [1], "$": [2], "a": [14], "b": [15], ",": [8]}
    # BOS, pad, then each known symbol followed by the pad, then EOS; unknown symbols (here "x") are skipped
    assert piper_voice.phoneme_ids("ab,x", id_map) == [1, 0, 14, 0, 15, 0, 8, 0, 2]


def test_phonemize_keeps_clause_punctuation():
    ipa = piper_voice.phonemize("Hello there, how are you?")
    assert "," in ipa and ipa.endswith("?")
    assert "h" in ipa and "ˈ" in ipa  # IPA with stress marks, as Piper's eSpeak front end gives


def test_the_same_text_sounds_the_same_and_other_text_differs():
    first = piper_voice.synthesize(SENTENCE)
    again = piper_voice.synthesize(SENTENCE)
    other = piper_voice.synthesize("Peter bought a bag of pears.")
    assert np.array_equal(first, again)
    assert not (len(other) == len(first) and np.array_equal(other, first))
    seconds = len(first) / demo_speech.SAMPLE_RATE
    assert 1.0 < seconds < 4.0, seconds  # six words at ~155 words per minute plus the silent edges
    edge = int(piper_voice.EDGE_S * demo_speech.SAMPLE_RATE)
    assert np.abs(first[:edge]).max() == 0 and np.abs(first[edge:-edge]).max() > 0.1
    assert np.abs(first).max() <= 0.9 + 1e-6


def test_slower_words_per_minute_speaks_longer():
    assert len(piper_voice.synthesize(SENTENCE, wpm=110)) > 1.2 * len(piper_voice.synthesize(SENTENCE, wpm=155))


def test_demo_speech_gives_contiguous_aligned_phonemes():
    samples, phonemes = demo_speech.speak(SENTENCE, "piper:joe")
    duration = len(samples) / demo_speech.SAMPLE_RATE
    assert phonemes[0].start_s == 0.0 and phonemes[-1].end_s == pytest.approx(duration)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(phonemes, phonemes[1:]))
    spoken = [p for p in phonemes if p.symbol != "_"]
    # the words' own phones in order (CMU -> eSpeak mnemonics): p iy t er | b ao t | ah | b ae g | ah v | p l ah m z
    assert [p.symbol for p in spoken[:5]] == ["p", "i:", "t", "3:", "b"]
    assert [p.symbol for p in spoken][-5:] == ["p", "l", "V", "m", "z"]
    # speech starts after the silent edge and the phones lie where the voice is loud
    assert spoken[0].start_s >= piper_voice.EDGE_S - 0.03
    loud = np.abs(samples) > 0.05
    first_loud = np.argmax(loud) / demo_speech.SAMPLE_RATE
    assert abs(spoken[0].start_s - first_loud) < 0.12


def test_speech_without_timings_skips_the_alignment():
    samples, phonemes = demo_speech.speak(SENTENCE, "piper:joe", timings=False)
    assert phonemes == [] and len(samples) > 0


def test_unknown_piper_voice_is_one_clear_error():
    with pytest.raises(InputError, match="piper voice 'nobody' does not exist; packaged piper voices: piper:joe"):
        demo_speech.speak(SENTENCE, "piper:nobody")


def test_tts_lists_and_accepts_the_piper_voice():
    assert "piper:joe" in {v.name for v in tts.available_voices()}
    assert tts.check_voice("piper:joe") == "piper:joe"
    with pytest.raises(InputError, match="unknown voice 'piper:joe\\+f2'"):
        tts.check_voice("piper:joe+f2")
