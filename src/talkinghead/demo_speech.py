"""Offline speech for the embedded demo presenter: eSpeak NG or Flite text-to-speech with phoneme timings, and the
viseme curves (jaw open, lip spread, lip round, lip closure) those phonemes drive.

Speech comes from libespeak-ng through ctypes (the copy shipped by the ``espeakng-loader`` wheel, else the
system library). The library is run in synchronous mode with phoneme events switched on, so every phoneme
arrives with the exact sample where the synthesiser started it -- no forced alignment, no guessing.

Visemes follow the Cohen-Massaro coarticulation idea: every phoneme has a target and a dominance per
articulator; the curve at time t is the dominance-weighted mean of all targets, where a phoneme's dominance
is full inside its segment and decays exponentially outside it. Strong phonemes (p/b/m closing the lips, open
vowels opening the jaw) win; weak ones (t, k, h) borrow the shape of their neighbours. The result is smooth
and a deterministic function of the phoneme sequence, which is what the lip model must learn from audio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import write_wav
from .errors import InputError

SAMPLE_RATE = 16000  # rate of every WAV the demo writes

# A sentence the demo presenter never says while its training video is made; `make demo` ends by making the
# presenter say it, so the lip model is shown on speech it has not seen.
UNSEEN_SENTENCE = ("Before the harbour lights fade, please tell the fisherman that his blue boat "
                   "is waiting by the old wooden bridge.")

# Training text: varied English with many lip closures (p, b, m), rounded (oo, w, sh) and spread (ee) sounds,
# questions and lists, so the mouth goes through every shape many times.
TRAINING_SENTENCES: tuple[str, ...] = (
    "Hello, and welcome to this short demonstration of a talking head.",
    "My name does not matter much; what matters is how my lips move when I speak.",
    "Peter bought a bag of plums at the market, but Bob ate most of them before lunch.",
    "Would you like a cup of warm soup, or maybe some cool blueberry juice?",
    "We measured the moon from the roof of the museum, one evening in early June.",
    "She sells seashells by the seashore, and she keeps the cheapest ones for herself.",
    "Please keep your eyes on the screen while the machine is learning.",
    "Big brown bears rarely wander through the busy streets of Boston.",
    "The quick fox jumps over the lazy dog, again and again, without stopping.",
    "Every morning, I walk to the office, buy a paper, and read the weather report.",
    "Mobile phones, maps and cameras have made travelling much simpler.",
    "Who knew that blue balloons would float so far above the swimming pool?",
    "A good teacher explains the problem, then waits patiently for your answer.",
    "Umbrellas, boots and woollen jumpers are useful when the autumn rain begins.",
    "Thank you for listening; I hope these examples were helpful.",
    "Maybe we should meet at the bookshop by the bridge at half past nine.",
    "Your voice, your face, and your movements together make a presentation feel alive.",
    "Pianos, trumpets and violins played beautiful music all through the summer night.",
    "Look at the map: the path goes up the hill, past the mill, and down to the beach.",
    "Why would anyone move a huge wooden boat across the frozen lake?",
    "People remember pictures better than numbers, so show them a simple example.",
    "Open your mouth wide and say: ah, oh, oo, ee, and then close your lips: mm.",
    "The baby bird waited by the window for its mother to bring more food.",
    "Some problems are small, some are big, but most of them can be solved by patient work.",
    "Today we finish with a final summary, and tomorrow we begin a brand new chapter.",
)


@dataclass(frozen=True)
class Phoneme:
    """One phoneme as eSpeak spoke it: its mnemonic (e.g. ``'oU``, ``b``, ``_:`` for a pause) and its span."""

    symbol: str
    start_s: float
    end_s: float


# ---------------------------------------------------------------------------------------------- eSpeak (ctypes)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index at the synthesiser's own rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Espeak:
    """The process-wide libespeak-ng instance (the library keeps global state, so one per process)."""

    def __init__(self) -> None:
        self.lib, data_path = self._load()
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS)
        if self.rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.rate}); data path {data_path!r}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    @staticmethod
    def _load() -> tuple[ctypes.CDLL, bytes | None]:
        try:
            import espeakng_loader

            return ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path()), \
                str(espeakng_loader.get_data_path()).encode()
        except (ImportError, OSError):
            name = ctypes.util.find_library("espeak-ng")
            if name is None:
                raise RuntimeError("libespeak-ng not found: install espeakng-loader or the espeak-ng package")
            return ctypes.cdll.LoadLibrary(name), None  # system library finds its own data

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                self._events.append((event.id.string.decode("utf-8", "replace"), int(event.sample)))
            i += 1
        return 0

    def synth(self, text: str, voice: str, wpm: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """int16 samples at ``self.rate`` and (phoneme, start sample) events for ``text``."""
        with self.lock:
            self._chunks, self._events = [], []
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise InputError(None, f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(wpm), 0)
            data = text.encode("utf-8")
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            self.lib.espeak_Synchronize()
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return samples, list(self._events)


_ENGINE: _Espeak | None = None


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


# ---------------------------------------------------------------------------------------------- Flite (Debian)

FLITE_PREFIX = "flite:"  # voice names like "flite:slt" pick a Flite voice instead of an eSpeak NG one
# Flite's US English phone set (CMU) -> the eSpeak mnemonics the viseme table knows
_FLITE_PHONES = {
    "aa": "A:", "ae": "a", "ah": "V", "ao": "O:", "aw": "aU", "ax": "@", "ay": "aI", "eh": "E", "er": "3:",
    "ey": "eI", "ih": "I", "iy": "i:", "ow": "oU", "oy": "OI", "uh": "U", "uw": "u:", "b": "b", "ch": "tS",
    "d": "d", "dh": "D", "f": "f", "g": "g", "hh": "h", "jh": "dZ", "k": "k", "l": "l", "m": "m", "n": "n",
    "ng": "N", "p": "p", "r": "r", "s": "s", "sh": "S", "t": "t", "th": "T", "v": "v", "w": "w", "y": "j",
    "z": "z", "zh": "Z", "pau": "_",
}


@functools.lru_cache(maxsize=1)
def flite_voices(exe: str) -> tuple[str, ...]:
    """The voices ``flite -lv`` lists (e.g. kal awb_time kal16 awb rms slt)."""
    import subprocess

    out = subprocess.run([exe, "-lv"], capture_output=True, text=True, timeout=30).stdout
    return tuple(out.split(":", 1)[1].split()) if ":" in out else ()


def flite_speak(text: str, voice: str, wpm: int = 155) -> tuple[np.ndarray, list[Phoneme]]:
    """Synthesise ``text`` with Debian's ``flite`` (voices kal, kal16, awb, rms, slt): float32 16 kHz samples [T]
    and the phonemes from its ``-psdur`` output (each phone's end time), contiguous from 0."""
    import shutil
    import subprocess
    import tempfile
    import wave

    from scipy.signal import resample_poly

    exe = shutil.which("flite")
    if exe is None:
        raise InputError(None, f"voice {FLITE_PREFIX}{voice} needs Debian's flite (apt-get install flite; "
                               "`make setup` installs it)")
    available = flite_voices(exe)
    if voice not in available:  # flite itself silently falls back to its default voice
        raise InputError(None, f"flite voice {voice!r} does not exist; flite has {', '.join(available)}")
    stretch = 155.0 / max(int(wpm), 1)  # Flite's own rate is close to eSpeak's 155 words per minute
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        done = subprocess.run([exe, "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}", "-psdur",
                               "-t", text, "-o", str(wav)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not wav.is_file():
            raise InputError(None, f"flite voice {voice!r} failed: {(done.stderr or done.stdout).strip()[:200]}")
        with wave.open(str(wav), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = pcm.astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        samples = resample_poly(samples, SAMPLE_RATE, rate).astype(np.float32)
    duration = len(samples) / SAMPLE_RATE
    phonemes: list[Phoneme] = []
    start = 0.0
    for token in done.stdout.split():
        name, _, end = token.rpartition(":")
        if name not in _FLITE_PHONES:
            continue
        end_s = min(float(end), duration)
        if end_s > start:
            phonemes.append(Phoneme(_FLITE_PHONES[name], start, end_s))
            start = end_s
    if not phonemes:
        raise InputError(None, f"flite voice {voice!r} reported no phone timings")
    if start < duration:
        phonemes.append(Phoneme("_", start, duration))
    return samples, phonemes


# ---------------------------------------------------------------------------------------------- Piper (neural)

def piper_speak(text: str, voice: str, wpm: int = 155, timings: bool = True) -> tuple[np.ndarray, list[Phoneme]]:
    """Synthesise ``text`` with packaged Piper voice ``voice`` (``joe``): float32 16 kHz samples [T] and, when
    ``timings``, its phonemes from forced alignment of the known text (contiguous from 0, gaps are silence ``_``).
    Without ``timings`` (speech for ``speak --text``, whose phonemes nobody reads) the phoneme list is empty."""
    from . import piper_voice
    from .speech.forced_align import aligner

    samples = piper_voice.synthesize(text, voice, wpm)
    if not timings:
        return samples, []
    duration = len(samples) / SAMPLE_RATE
    phonemes: list[Phoneme] = []
    start = 0.0
    for phone in aligner()(samples, text):
        end_s = min(phone.end_s, duration)
        if phone.start_s > start:
            phonemes.append(Phoneme("_", start, phone.start_s))
            start = phone.start_s
        if end_s > start:
            phonemes.append(Phoneme(phone.symbol, start, end_s))
            start = end_s
    if not any(p.symbol != "_" for p in phonemes):
        raise InputError(None, f"voice {piper_voice.PREFIX}{voice}: forced alignment found no phones in {text[:60]!r} "
                               "(words outside the CMU dictionary?)")
    if start < duration:
        phonemes.append(Phoneme("_", start, duration))
    return samples, phonemes


def speak(text: str, voice: str = "en-us", wpm: int = 155, timings: bool = True) -> tuple[np.ndarray, list[Phoneme]]:
    """Synthesise ``text``: float32 mono samples at 16 kHz [T] and the phonemes, contiguous and covering [0, T).
    ``voice`` is an eSpeak NG voice (``en-us``, ``en-us+f2``, ...), ``flite:NAME`` (``flite:slt``, ...) or
    ``piper:joe``. ``timings`` False lets a voice skip work only the phonemes need (Piper's forced alignment)."""
    from scipy.signal import resample_poly

    from .piper_voice import PREFIX as PIPER_PREFIX

    if not text.strip():
        raise InputError(None, "cannot speak an empty text")
    if voice.startswith(FLITE_PREFIX):
        return flite_speak(text, voice[len(FLITE_PREFIX):], wpm)
    if voice.startswith(PIPER_PREFIX):
        return piper_speak(text, voice[len(PIPER_PREFIX):], wpm, timings)
    engine = _engine()
    pcm, events = engine.synth(text, voice, wpm)
    samples = resample_poly(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE, engine.rate).astype(np.float32)
    duration = len(samples) / SAMPLE_RATE
    starts = [min(s / engine.rate, duration) for _, s in events]
    phonemes: list[Phoneme] = []
    for k, (symbol, _) in enumerate(events):
        end = starts[k + 1] if k + 1 < len(events) else duration
        if end > starts[k]:  # eSpeak reports zero-length pause markers at sentence ends; drop them
            phonemes.append(Phoneme(symbol, starts[k], end))
    if phonemes and phonemes[0].start_s > 0:  # leading silence before the first phoneme
        phonemes.insert(0, Phoneme("_", 0.0, phonemes[0].start_s))
    return samples, phonemes


def synthesize_speech(text: str, wav_path: str | Path, voice: str = "en-us", wpm: int = 155) -> list[Phoneme]:
    """Speak ``text`` into a 16 kHz mono 16-bit WAV at ``wav_path`` (atomic) and return its phoneme timings."""
    samples, phonemes = speak(text, voice, wpm)
    write_wav(wav_path, samples, SAMPLE_RATE)
    return phonemes


# ---------------------------------------------------------------------------------------------- visemes

VISEME_NAMES = ("jaw_open", "lip_spread", "lip_round", "closure")

# target (jaw_open, lip_spread, lip_round, closure) and dominance (jaw/spread/round, closure) per eSpeak
# English phoneme mnemonic, stress marks removed. Diphthongs list their start and end targets.
_V = {
    # vowels
    "a": (0.75, 0.35, 0.0, 0.0), "a#": (0.5, 0.2, 0.0, 0.0), "A:": (0.9, 0.1, 0.0, 0.0), "A": (0.85, 0.1, 0.0, 0.0),
    "@": (0.35, 0.1, 0.0, 0.0), "3": (0.3, 0.0, 0.3, 0.0), "3:": (0.35, 0.0, 0.35, 0.0),
    "e": (0.55, 0.45, 0.0, 0.0), "E": (0.55, 0.4, 0.0, 0.0), "i": (0.2, 0.75, 0.0, 0.0),
    "i:": (0.2, 0.75, 0.0, 0.0), "I": (0.3, 0.5, 0.0, 0.0), "0": (0.75, 0.0, 0.35, 0.0),
    "O": (0.6, 0.0, 0.6, 0.0), "O:": (0.6, 0.0, 0.6, 0.0), "o": (0.5, 0.0, 0.6, 0.0),
    "u": (0.2, 0.0, 0.9, 0.0), "u:": (0.2, 0.0, 0.9, 0.0), "U": (0.3, 0.0, 0.6, 0.0), "V": (0.6, 0.15, 0.0, 0.0),
    # consonants
    "p": (0.0, 0.0, 0.0, 1.0), "b": (0.0, 0.0, 0.0, 1.0), "m": (0.0, 0.0, 0.0, 1.0),
    "f": (0.08, 0.15, 0.0, 0.35), "v": (0.08, 0.15, 0.0, 0.35),
    "T": (0.2, 0.2, 0.0, 0.0), "D": (0.2, 0.2, 0.0, 0.0), "s": (0.1, 0.5, 0.0, 0.0), "z": (0.1, 0.5, 0.0, 0.0),
    "S": (0.15, 0.0, 0.55, 0.0), "Z": (0.15, 0.0, 0.55, 0.0), "tS": (0.15, 0.0, 0.55, 0.0),
    "dZ": (0.15, 0.0, 0.55, 0.0), "t": (0.2, 0.25, 0.0, 0.0), "d": (0.2, 0.25, 0.0, 0.0),
    "n": (0.2, 0.2, 0.0, 0.0), "l": (0.25, 0.15, 0.0, 0.0), "k": (0.25, 0.1, 0.0, 0.0),
    "g": (0.25, 0.1, 0.0, 0.0), "N": (0.25, 0.1, 0.0, 0.0), "h": (0.35, 0.1, 0.0, 0.0),
    "r": (0.2, 0.0, 0.45, 0.0), "w": (0.1, 0.0, 0.95, 0.0), "j": (0.15, 0.6, 0.0, 0.0), "x": (0.25, 0.0, 0.0, 0.0),
    "?": (0.2, 0.0, 0.0, 0.0),
    # silence
    "_": (0.0, 0.0, 0.0, 0.0),
}
_DIPHTHONGS = {
    "aI": ("a", "I"), "aU": ("a", "U"), "eI": ("e", "I"), "e@": ("e", "@"), "oU": ("o", "u"), "OI": ("O", "I"),
    "i@": ("i", "@"), "U@": ("U", "@"), "A@": ("A", "@"), "O@": ("O", "@"), "aI@": ("a", "@"), "aU@": ("a", "@"),
    "i@3": ("i", "@"), "eI@": ("e", "@"),
}
# dominance of (jaw/spread/round, closure); vowels and lip-closing consonants dominate, tongue consonants borrow
_STRONG = {"p", "b", "m"}
_MEDIUM = {"f", "v", "w", "s", "z", "S", "Z", "tS", "dZ", "r", "j", "T", "D"}
_TONGUE = {"t", "d", "n", "l", "k", "g", "N", "h", "x", "?"}


def _normalise(symbol: str) -> str:
    """eSpeak mnemonic -> key of the target table (stress marks, variants and length marks removed)."""
    s = symbol.replace("'", "").replace(",", "").replace("%", "").replace("=", "")
    if s.startswith("_") or s in ("", "||", "|"):
        return "_"
    for candidate in (s, s.rstrip("#0123456789"), s.rstrip("#0123456789:"), s.rstrip("-/")):
        if candidate in _V or candidate in _DIPHTHONGS:
            return candidate
    if s[:2] in _V:
        return s[:2]
    return s[0] if s[0] in _V else "?"


def _segments(phonemes: list[Phoneme]) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """(start, end, target[4], dominance[4]) per viseme segment; diphthongs split in two halves."""
    out = []
    for ph in phonemes:
        key = _normalise(ph.symbol)
        if key == "_":
            dom = np.array([1.2, 1.2, 1.2, 1.2])
        elif key in _STRONG:
            dom = np.array([1.5, 0.8, 0.8, 2.0])
        elif key in _MEDIUM:
            dom = np.array([0.7, 0.7, 0.9, 0.6])
        elif key in _DIPHTHONGS or key not in _TONGUE:
            dom = np.array([1.0, 1.0, 1.0, 0.5])  # vowels
        else:
            dom = np.array([0.3, 0.25, 0.25, 0.3])  # tongue consonants take their neighbours' lip shape
        if key in _DIPHTHONGS:
            first, second = _DIPHTHONGS[key]
            mid = 0.5 * (ph.start_s + ph.end_s)
            out.append((ph.start_s, mid, np.array(_V[first]), dom))
            out.append((mid, ph.end_s, np.array(_V[second]), dom))
        else:
            out.append((ph.start_s, ph.end_s, np.array(_V[key]), dom))
    return out


# how far (s) a phoneme's influence reaches outside its segment, per viseme: lip closure is brief and local,
# jaw and lip shape are anticipated over ~100 ms
DECAY_S = np.array([0.045, 0.045, 0.05, 0.018])


def viseme_curves(phonemes: list[Phoneme], times: np.ndarray, smooth_s: float = 0.02) -> np.ndarray:
    """Coarticulated viseme values at ``times`` [N] -> float32 [N, 4] in [0, 1] (columns VISEME_NAMES).

    Dominance of a segment = its weight inside it, times exp(-distance / DECAY_S) outside it; the value is the
    dominance-weighted mean of the targets, then smoothed with a Gaussian of ``smooth_s`` (muscles are not
    instantaneous). Times outside all phonemes are silence (mouth at rest).
    """
    times = np.asarray(times, dtype=np.float64)
    step = 0.005
    t_end = max([times.max(initial=0.0)] + [ph.end_s for ph in phonemes]) + 0.5
    grid = np.arange(-0.5, t_end + step, step)  # [G] fine grid, smoothed there and interpolated to ``times``
    num = np.zeros((len(grid), 4))
    den = np.full((len(grid), 4), 1e-3)
    rest = np.zeros(4)
    num += 1e-3 * rest
    for start, end, target, dom in _segments(phonemes):
        lo = np.searchsorted(grid, start - 8 * DECAY_S.max())
        hi = np.searchsorted(grid, end + 8 * DECAY_S.max())
        g = grid[lo:hi]
        distance = np.maximum(np.maximum(start - g, g - end), 0.0)
        weight = np.exp(-distance[:, None] / DECAY_S[None, :]) * dom[None, :]  # [g, 4]
        num[lo:hi] += weight * target[None, :]
        den[lo:hi] += weight
    curves = num / den
    sigma = smooth_s / step
    radius = int(4 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(curves, ((radius, radius), (0, 0)), mode="edge")
    smoothed = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], axis=1)
    out = np.stack([np.interp(times, grid, smoothed[:, k]) for k in range(4)], axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def mouth_opening(visemes: np.ndarray) -> np.ndarray:
    """The lip gap the face warp draws, as a fraction of its maximum: jaw opening, cancelled by lip closure.
    visemes [N, 4] -> [N]."""
    closure = np.clip(visemes[:, 3], 0.0, 1.0)
    return (visemes[:, 0] * (1.0 - closure) ** 2).astype(np.float32)


def phoneme_at(phonemes: list[Phoneme], times: np.ndarray) -> list[str]:
    """The phoneme symbol sounding at each time ('' past the end)."""
    starts = np.array([ph.start_s for ph in phonemes])
    idx = np.searchsorted(starts, np.asarray(times), side="right") - 1
    return [phonemes[i].symbol if 0 <= i < len(phonemes) and t < phonemes[i].end_s else ""
            for i, t in zip(idx, np.asarray(times))]
