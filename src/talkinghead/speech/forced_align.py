"""Forced alignment of a known English text to speech: phones with times, by ``pocketsphinx`` (CMU en-us acoustic
model and dictionary in its wheel; 10 ms resolution). Used by the ``phones`` encoders (on Whisper's transcript) and
by the demo's Piper voice (on the sentence it was asked to say), which reports no phone times of its own.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from ..demo_speech import _FLITE_PHONES, Phoneme

SAMPLE_RATE = 16000
ALIGN_FPS = 100  # pocketsphinx frames per second
SILENCE = "_"


class Aligner:
    """pocketsphinx forced alignment of a known English text: phones with times (CMU phone set)."""

    def __init__(self):
        import pocketsphinx

        # batch CMN: each utterance normalised on its own (live CMN carries over from the previous one)
        self.decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", cmn="batch")

    def words(self, text: str) -> list[str]:
        """The words of ``text`` that the pronunciation dictionary knows (lower case, punctuation removed)."""
        words = (w.strip("'") for w in re.findall(r"[a-z']+", text.lower()))
        return [w for w in words if w and self.decoder.lookup_word(w) is not None]

    def __call__(self, samples: np.ndarray, text: str) -> list[Phoneme]:
        """Phones of ``text`` in 16 kHz ``samples`` [T], times from the start of ``samples``; [] when nothing can be
        aligned (no known word, or the decoder finds no path)."""
        words = self.words(text)
        if not words or len(samples) < SAMPLE_RATE // 10:
            return []
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self.decoder
        try:
            decoder.set_align_text(" ".join(words))
            decoder.start_utt()  # first pass: word alignment
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            decoder.set_alignment()
            decoder.start_utt()  # second pass: phones within those words
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            alignment = decoder.get_alignment()
        except RuntimeError:  # pocketsphinx: "Failed to stop utterance processing" = no path through the text
            return []
        if alignment is None:
            return []
        phones = []
        for word in alignment:
            for phone in word:
                symbol = _FLITE_PHONES.get(phone.name.lower(), SILENCE)  # CMU phone -> the viseme table's symbol
                phones.append(Phoneme(symbol, phone.start / ALIGN_FPS, (phone.start + phone.duration) / ALIGN_FPS))
        return phones


@functools.lru_cache(maxsize=1)
def aligner() -> Aligner:
    """The process's one pocketsphinx aligner (loading its acoustic model takes ~0.3 s)."""
    return Aligner()
