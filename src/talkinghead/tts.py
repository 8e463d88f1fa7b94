"""Offline text-to-speech for ``talkinghead speak --text`` and the app: the voices on this machine, and speech made
sentence by sentence so any length of text streams.

The synthesisers are the demo presenter's own (demo_speech: eSpeak NG through ctypes, Debian Flite through its
command line). Voice names follow params.yaml ``demo.voices``: an eSpeak NG language, optionally with a variant
(``en-us``, ``en-gb-x-rp+f4``), ``flite:NAME`` (``flite:slt``), or ``piper:joe`` (Piper's neural en_US-joe-medium,
run by onnxruntime from its wheel; ``piper_voice``).
"""

from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError

SAMPLE_RATE = 16000  # what demo_speech.speak returns, and what the lip model's features are made from


@dataclass(frozen=True)
class TtsParams:
    """params.yaml's ``tts`` group."""

    voice: str  # default voice of speak --text and the app
    words_per_minute: int
    first_chunk_words: int  # the first chunk is short, so the first frame comes soon
    chunk_words: int  # later chunks: whole sentences up to about this many words


@dataclass(frozen=True)
class Voice:
    name: str  # what --voice takes
    engine: str  # "espeak-ng", "flite" or "piper"
    description: str


class _EspeakVoice(ctypes.Structure):
    """espeak_VOICE from speak_lib.h."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


def _espeak_languages(engine) -> list[tuple[str, str]]:
    """(language code, voice name) of every eSpeak NG voice, from espeak_ListVoices."""
    lib = engine.lib
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
    voices = lib.espeak_ListVoices(None)
    out = []
    i = 0
    while voices[i]:
        voice = voices[i].contents
        # languages: a priority byte, then the language name, zero-terminated (the first one is the voice's own)
        language = ctypes.string_at(voice.languages + 1).decode("utf-8", "replace") if voice.languages else ""
        if language:
            out.append((language, (voice.name or b"").decode("utf-8", "replace")))
        i += 1
    return out


def _espeak_variants() -> list[str]:
    """Names of the eSpeak NG voice variants (``+f2``, ``+m3``, ``+klatt``, ...): the files of voices/!v."""
    try:
        import espeakng_loader

        folders = [Path(espeakng_loader.get_data_path()) / "voices" / "!v"]
    except ImportError:
        folders = []
    folders += [Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v"), Path("/usr/share/espeak-ng-data/voices/!v")]
    for folder in folders:
        if folder.is_dir():
            return sorted(p.name for p in folder.iterdir() if p.is_file())
    return []


@functools.lru_cache(maxsize=1)
def available_voices() -> tuple[Voice, ...]:
    """Every voice this machine can speak with: Flite's first (the default is one of them), then the packaged Piper
    voice, then eSpeak NG's."""
    import importlib.util
    import shutil

    from . import demo_speech, piper_voice

    voices: list[Voice] = []
    exe = shutil.which("flite")
    if exe is not None:
        voices += [Voice(f"{demo_speech.FLITE_PREFIX}{v}", "flite", "Flite (CMU), US English")
                   for v in demo_speech.flite_voices(exe)]
    if importlib.util.find_spec("onnxruntime") is not None:
        voices += [Voice(f"{piper_voice.PREFIX}{v}", "piper", "Piper (neural, one real speaker), US English")
                   for v, package in piper_voice.PACKAGES.items() if importlib.util.find_spec(package) is not None]
    try:
        engine = demo_speech._engine()
    except RuntimeError:
        return tuple(voices)
    with engine.lock:
        languages = _espeak_languages(engine)
    voices += [Voice(code, "espeak-ng", name) for code, name in sorted(set(languages))]
    return tuple(voices)


def espeak_variants() -> tuple[str, ...]:
    return tuple(_espeak_variants())


def check_voice(voice: str) -> str:
    """``voice`` if this machine has it, else InputError listing what it has."""
    voices = available_voices()
    names = {v.name for v in voices}
    base, plus, variant = voice.partition("+")
    if base in names and (not plus or (base.partition(":")[1] == "" and variant in espeak_variants())):
        return voice
    english = [v.name for v in voices if v.engine != "espeak-ng" or v.name.startswith("en")]
    raise InputError(None, f"unknown voice {voice!r}; voices here: {', '.join(english)} (English), and "
                           f"{len(voices) - len(english)} eSpeak NG voices of other languages; any eSpeak NG voice takes a variant "
                           f"such as +f2 or +m3; `talkinghead voices` lists them all")


def format_voices() -> str:
    """The `talkinghead voices` listing: one voice per line, then the eSpeak NG variants."""
    lines = [f"{v.name:<22} {v.engine:<10} {v.description}" for v in available_voices()]
    variants = espeak_variants()
    if variants:
        lines.append(f"eSpeak NG variants (append to an eSpeak NG voice, e.g. en-us+f2): {' '.join(variants)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- text -> chunks

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


def sentences(text: str, max_words: int) -> list[str]:
    """``text`` split after sentence ends (. ! ? ; : or a blank line); a longer run of words than ``max_words``
    is cut into pieces of ``max_words``, so no chunk is unbounded."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        out += [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)]
    return out


def chunks(text: str, first_words: int, chunk_words: int) -> list[str]:
    """Sentences grouped into chunks: the first one alone (at most ``first_words`` words, cut if longer), then
    whole sentences up to about ``chunk_words`` words each."""
    pieces = sentences(text, max(1, chunk_words))
    out: list[str] = []
    if pieces:
        words = pieces[0].split()
        out.append(" ".join(words[:first_words]))
        if len(words) > first_words:
            pieces[0] = " ".join(words[first_words:])
        else:
            pieces.pop(0)
    current: list[str] = []
    for piece in pieces:
        if current and sum(len(p.split()) for p in current) + len(piece.split()) > chunk_words:
            out.append(" ".join(current))
            current = []
        current.append(piece)
    if current:
        out.append(" ".join(current))
    return out


@dataclass(frozen=True)
class TextSpeech:
    """Text to be spoken by ``voice``: what speak takes instead of an audio file."""

    text: str
    voice: str
    params: TtsParams
    source: str = "--text"  # named in errors: the option or the file the text came from

    def check(self) -> list[str]:
        """The chunks to speak; InputError for an empty text or an unknown voice (before any heavy work)."""
        if not self.text.strip():
            raise InputError(self.source, "empty text: nothing to say")
        check_voice(self.voice)
        parts = [c for c in chunks(self.text, self.params.first_chunk_words, self.params.chunk_words)
                 if re.search(r"\w", c)]
        if not parts:
            raise InputError(self.source, "no words to say (only punctuation or symbols)")
        return parts

    def stream(self, parts: list[str]) -> Iterator[np.ndarray]:
        """float32 16 kHz mono samples [T] of each chunk in turn (chunks that come out silent are skipped)."""
        from . import demo_speech

        for part in parts:
            samples, _ = demo_speech.speak(part, self.voice, self.params.words_per_minute, timings=False)
            if len(samples):
                yield samples


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file's contents; InputError if it is missing, not text, or empty."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise InputError(path, f"not a UTF-8 text file ({exc.__class__.__name__})") from None
    if not text.strip():
        raise InputError(path, "empty text: nothing to say")
    return text
