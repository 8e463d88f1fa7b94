"""Speech features: the CTranslate2 reader, the Whisper encoder port (packaged tiny.en), speaker independence against
log-mel, long-audio windows, clear errors for a missing/corrupt model folder or unknown params, Silero VAD."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import torch

from talkinghead.demo_speech import speak
from talkinghead.errors import InputError
from talkinghead.speech.ctranslate2_file import ModelFileError, read_model_bin
from talkinghead.speech.features import AlignParams, features_for_audio
from talkinghead.speech.whisper import encode_audio, load_whisper_encoder, packaged_model_dir

from configs import project_config, project_group

RATE = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_model_bin(path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec", version: int = 6) -> None:
    """CTranslate2's serialisation (ModelSpec._serialize), for the reader's round trip."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.float16): 4, np.dtype(np.int16): 2}

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", version) + string(spec) + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        out += string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<B", dtype_ids[value.dtype]) + struct.pack("<I", value.nbytes) + value.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))


def test_ctranslate2_reader_round_trip_and_truncation(tmp_path):
    variables = {"encoder/a": np.arange(6, dtype=np.float16).reshape(2, 3), "encoder/n": np.array(6, np.int16),
                 "decoder/b": np.ones(4, np.float32)}
    write_model_bin(tmp_path / "model.bin", variables)
    spec, tensors = read_model_bin(tmp_path / "model.bin", prefix="encoder/")
    assert spec == "WhisperSpec" and set(tensors) == {"encoder/a", "encoder/n"}
    np.testing.assert_array_equal(tensors["encoder/a"], variables["encoder/a"])
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:40])
    with pytest.raises(ModelFileError, match="truncated"):
        read_model_bin(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + data[4:])
    with pytest.raises(ModelFileError, match="version 9"):
        read_model_bin(tmp_path / "v9.bin")


def test_packaged_whisper_encoder_states_at_50_hz():
    encoder = load_whisper_encoder(None)
    assert (encoder.config.n_layers, encoder.config.n_state, encoder.config.n_heads) == (4, 384, 6)
    samples, _ = speak("Hello there, how are you today?", "en-us", 155)
    states = encode_audio(encoder, samples, layer=2)
    assert states.shape == (int(np.ceil(len(samples) / 320)), 384) and np.isfinite(states).all()
    final = encode_audio(encoder, samples, layer=4)
    assert not np.allclose(states, final)  # the layer parameter reaches the network


def test_long_audio_windows_join_where_the_first_window_is_trusted():
    encoder = load_whisper_encoder(None)
    rng = np.random.default_rng(0)
    long = (0.05 * rng.standard_normal(RATE * 70)).astype(np.float32)
    states = encode_audio(encoder, long, layer=1)
    assert states.shape == (3500, 384) and np.isfinite(states).all()
    first = encode_audio(encoder, long[:RATE * 30], layer=1)
    # the first window owns its states up to 5 s before its end; past the join they come from the next window
    np.testing.assert_allclose(states[:1250], first[:1250], atol=1e-5)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-step cosine distance along the best monotonic alignment of a [n, D] and b [m, D]."""
    an = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-9)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-9)
    cost = 1.0 - an @ bn.T  # [n, m]
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    steps = np.zeros((n + 1, m + 1))
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = min((acc[i - 1, j - 1], steps[i - 1, j - 1]), (acc[i - 1, j], steps[i - 1, j]),
                       (acc[i, j - 1], steps[i, j - 1]))
            acc[i, j] = prev[0] + cost[i - 1, j - 1]
            steps[i, j] = prev[1] + 1
    return float(acc[n, m] / steps[n, m])


def test_whisper_features_follow_words_more_than_voices_than_log_mel():
    """Same sentence in two voices vs two sentences in one voice: Whisper's states must tell the words apart
    relative to the voices clearly better than log-mel does (the reason it is the default)."""
    sentence_a = "Peter bought a bag of plums at the market."
    sentence_b = "Would you like a cup of warm soup tonight?"
    clips = {(s, v): speak(s, v, 155)[0] for s in (sentence_a, sentence_b) for v in ("en-us", "en-gb-x-rp+f4")}
    ratios = {}
    for encoder in ("whisper", "mel"):
        params = project_config(AlignParams, "align", encoder=encoder)
        feats = {k: features_for_audio(x, int(len(x) / RATE * 25), 25, params)[:, params.half_context]
                 for k, x in clips.items()}  # the frame-centre hop of every frame: [N, D]
        same_words = dtw_distance(feats[(sentence_a, "en-us")], feats[(sentence_a, "en-gb-x-rp+f4")])
        same_voice = dtw_distance(feats[(sentence_a, "en-us")], feats[(sentence_b, "en-us")])
        ratios[encoder] = same_words / same_voice
    assert ratios["whisper"] < 0.8 * ratios["mel"], ratios


def test_model_folder_missing_or_corrupt_names_the_parameter(tmp_path):
    samples = np.zeros(RATE, np.float32)
    with pytest.raises(InputError, match="align.whisper_model") as missing:
        features_for_audio(samples, 25, 25, project_config(AlignParams, "align", whisper_model=str(tmp_path / "nowhere")))
    assert "no model.bin" in str(missing.value)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    data = (packaged_model_dir() / "model.bin").read_bytes()
    (corrupt / "model.bin").write_bytes(data[:len(data) // 3])  # an interrupted copy
    with pytest.raises(InputError, match="align.whisper_model.*not a readable CTranslate2 Whisper model"):
        features_for_audio(samples, 25, 25, project_config(AlignParams, "align", whisper_model=str(corrupt)))
    other = tmp_path / "other"
    other.mkdir()
    write_model_bin(other / "model.bin", {"encoder/x": np.zeros(2, np.float32)}, spec="TransformerSpec")
    with pytest.raises(InputError, match="not a Whisper model"):
        features_for_audio(samples, 25, 25, project_config(AlignParams, "align", whisper_model=str(other)))


def test_a_user_model_folder_is_used(tmp_path):
    """A CTranslate2 Whisper folder of the user's own (here a copy of the packaged one) is read from its path."""
    own = tmp_path / "my-whisper"
    shutil.copytree(packaged_model_dir(), own)
    samples, _ = speak("Good morning.", "en-us", 155)
    mine = features_for_audio(samples, 20, 25, project_config(AlignParams, "align", whisper_model=str(own)))
    packaged = features_for_audio(samples, 20, 25, project_config(AlignParams, "align"))
    np.testing.assert_allclose(mine, packaged, atol=1e-6)


def test_align_params_refuse_unknown_keys_and_encoders():
    with pytest.raises(InputError, match="unknown key.*encodr"):
        AlignParams.from_dict({**project_group("align"), "encodr": "mel"})
    with pytest.raises(InputError, match="align.encoder is 'hubert'"):
        AlignParams.from_dict({**project_group("align"), "encoder": "hubert"})
    assert AlignParams.from_dict({**project_group("align"), "encoder": "mel"}).context == 11
    missing = project_group("align")
    del missing["whisper_layer"]
    with pytest.raises(InputError, match="missing key.*whisper_layer"):
        AlignParams.from_dict(missing)


def test_music_and_noise_still_give_features():
    """Audio that is not English speech (a chord, noise) encodes without error: speak must still make a video."""
    t = np.arange(RATE * 3) / RATE
    chord = (0.2 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 277 * t) + np.sin(2 * np.pi * 330 * t)))
    for audio in (chord.astype(np.float32), np.random.default_rng(1).normal(0, 0.1, RATE * 3).astype(np.float32)):
        feats = features_for_audio(audio, 75, 25, project_config(AlignParams, "align"))
        assert feats.shape == (75, 5, 384) and np.isfinite(feats).all()


def test_vad_tells_speech_from_silence():
    from talkinghead.speech.vad import voiced_frames

    samples, _ = speak("This sentence is spoken between two silences.", "en-us", 155)
    audio = np.concatenate([np.zeros(RATE, np.float32), samples, np.zeros(RATE, np.float32)])
    n = int(len(audio) / RATE * 25)
    voiced = voiced_frames(audio, n, 25)
    assert voiced[:20].mean() < 0.2 and voiced[-20:].mean() < 0.2  # the silent seconds
    middle = voiced[25 + 5:25 + int(len(samples) / RATE * 25) - 5]
    assert middle.mean() > 0.7
    assert torch.get_num_threads() == 1  # loading the model leaves torch's thread count alone (fixture set 1)


def test_feature_dim_matches_the_features():
    for params in (project_config(AlignParams, "align"), project_config(AlignParams, "align", encoder="mel", n_mels=64)):
        feats = features_for_audio(np.zeros(RATE, np.float32), 25, 25, params)
        assert feats.shape == (25, params.context, params.feature_dim)
