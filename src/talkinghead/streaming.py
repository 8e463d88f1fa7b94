"""Lip model on live audio: expression coefficients for each video frame as soon as its audio (plus a short
look-ahead) has arrived, with memory and cost per frame that do not grow with the length of the stream.

Offline, ``speak`` encodes the whole utterance at once (lip.speech_features) and normalises the encoder states over
it. Live, neither the future nor the whole utterance exists, so ``StreamingLip``:

- keeps the last ``history_s`` seconds of audio and re-encodes that window each step (Whisper's attention and the
  log-mel's per-window level clamp see only that window; mel features are per-hop anyway);
- normalises the states with running statistics: everything already emitted plus the current window, so the first
  second of a stream is normalised by its own window and a long stream by all of it, as an utterance is offline;
- builds each frame's feature stack exactly as ``features_for_audio`` does (the hops around the frame's centre,
  clamped to the audio so far) and runs the lip Transformer on the last ``window`` frames of features, which end
  ``lookahead_frames`` after the newest frame it emits: those frames' mouths may use that much future audio. The
  checkpoint's temporal smoothing (``smooth_sigma``) runs over that window's outputs, so it matches offline
  smoothing when its kernel (3 sigma each side) fits in the look-ahead, and is cut short at the newest frame if not.

Look-ahead trades delay for sync: each frame is emitted ``lookahead_frames / fps`` seconds after its audio plus one
step of computation; `talkinghead bench --parts stream` measures both the delay and how far the mouth opening
strays from offline ``speak``'s.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import torch

from .lip import checkpoint_align_params, load_lip_model, smooth_frames
from .speech.features import SAMPLE_RATE, AlignParams, log_mel

# the audio kept beyond the history window, so hop indices near the window's start are always computable
_SPARE_S = 1.0


class RunningStats:
    """Per-dimension mean and standard deviation of all rows added so far (sums in float64: no drift, O(D) memory)."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.total_sq = np.zeros(dim, np.float64)

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64)
        self.count += len(rows)
        self.total += rows.sum(axis=0)
        self.total_sq += (rows ** 2).sum(axis=0)

    def normalise(self, rows: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """``rows`` [H, D] -> float32 [H, D] at mean 0, std 1 under the stats so far plus ``extra`` [h, D] rows."""
        count, total, total_sq = self.count, self.total, self.total_sq
        if extra is not None and len(extra):
            extra = np.asarray(extra, np.float64)
            count, total, total_sq = count + len(extra), total + extra.sum(0), total_sq + (extra ** 2).sum(0)
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
        return ((rows - mean) / np.maximum(std, 1e-3)).astype(np.float32)  # the floor of normalise_per_utterance


class StreamingLip:
    """Feed 16 kHz mono float32 audio with ``push``; take expression rows [k, 53] with ``pop``.

    Args:
        checkpoint: the lip model (its own align settings make the features, as for ``speak``).
        presenter: a presenter the lip model was trained on.
        fps: video frame rate.
        history_s: seconds of audio re-encoded per step (more: closer to offline features, slower).
        lookahead_frames: future frames of audio each emitted frame may use (0 = none; delay = this / fps).
        device: torch device for the lip model.
    """

    def __init__(self, checkpoint: str | Path, presenter: str, fps: float, history_s: float, lookahead_frames: int,
                 device: str | None = "cpu"):
        self.lip = load_lip_model(checkpoint, device)
        self.align: AlignParams = checkpoint_align_params(self.lip.align)
        config = self.lip.model.config
        if presenter not in config.presenters:
            from .errors import InputError

            raise InputError(Path(checkpoint), f"presenter {presenter!r} is not in the lip model (trained on "
                                               f"{config.presenters}); retrain with `dvc repro train_lip`")
        self.presenter_index = self.lip.model.presenter_index(presenter)
        self.fps = float(fps)
        self.history = int(round(history_s * SAMPLE_RATE))
        self.lookahead = int(lookahead_frames)
        self.window = int(config.window)
        if self.align.encoder not in ("whisper", "mel"):
            from .errors import InputError

            # phone timings come from a transcript of the whole utterance: nothing to emit a frame at a time from
            raise InputError(Path(checkpoint), f"the lip model was trained with align.encoder "
                                               f"{self.align.encoder!r}, which needs whole utterances; streaming "
                                               "supports whisper and mel (use `talkinghead speak`)")
        self.encoder = None
        if self.align.encoder == "whisper":
            from .speech.whisper import load_whisper_encoder

            self.encoder = load_whisper_encoder(self.align.whisper_model)
        self.hop = self.align.hop  # samples per encoder state / mel hop
        self.stats = RunningStats(self.align.feature_dim)
        self.audio = np.zeros(0, np.float32)  # the tail of the stream kept for re-encoding
        self.audio_start = 0  # absolute sample index of self.audio[0]
        self.received = 0  # samples pushed so far
        self.emitted = 0  # frames emitted so far
        self.stats_until = 0  # absolute hop index up to which states entered the running stats
        self.features: deque[np.ndarray] = deque(maxlen=self.window)  # [C, D] per frame, newest last

    # -- input ------------------------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float32 samples."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.audio = np.concatenate([self.audio, samples])
        self.received += len(samples)
        keep = self.history + int(_SPARE_S * SAMPLE_RATE)
        if len(self.audio) > keep:  # memory stays flat however long the stream
            drop = len(self.audio) - keep
            self.audio = self.audio[drop:]
            self.audio_start += drop

    def frames_ready(self, final: bool = False) -> int:
        """Frames whose audio plus look-ahead has arrived (all frames the audio covers when ``final``)."""
        if final:
            total = int(np.ceil(self.received / SAMPLE_RATE * self.fps - 1e-9))
        else:
            total = int(np.floor(self.received / SAMPLE_RATE * self.fps + 1e-9)) - self.lookahead
        return max(0, total - self.emitted)

    # -- output -----------------------------------------------------------------------------------------------
    def pop(self, final: bool = False) -> np.ndarray:
        """Expression coefficients float32 [k, 53] of the next k ready frames (k may be 0)."""
        # at most what one model window holds beside the look-ahead frames; ``drain`` loops over the rest
        k = min(self.frames_ready(final), max(1, self.window - self.lookahead))
        if k == 0:
            return np.zeros((0, self.lip.model.config.n_out), np.float32)
        first, stop = self.emitted, self.emitted + k  # frames to emit
        # frames whose features enter the model's window: up to ``lookahead`` past the last emitted one
        feature_stop = stop if final else stop + self.lookahead
        window_end = min(self.received, int(round(feature_stop / self.fps * SAMPLE_RATE)) + self.hop)
        window_start = max(self.audio_start, window_end - self.history)
        lo_hop = -(-window_start // self.hop)  # first whole hop inside the window (absolute index)
        states = self._encode(self.audio[lo_hop * self.hop - self.audio_start:window_end - self.audio_start])
        # hops that are now final (older than the look-ahead region) join the running statistics once
        settled_hop = int(round(first / self.fps * SAMPLE_RATE / self.hop))
        new_from = max(self.stats_until, lo_hop)
        if settled_hop > new_from:
            self.stats.add(states[new_from - lo_hop:settled_hop - lo_hop])
            self.stats_until = settled_hop
        pending = states[max(self.stats_until - lo_hop, 0):]
        normalised = self.stats.normalise(states, extra=pending)  # [H, D]
        # frames from ``first`` on are featurised afresh each step (the look-ahead ones saw less audio last time);
        # the window's older part is the emitted frames' features as they were when emitted
        fresh = [self._frame_features(frame, normalised, lo_hop) for frame in range(first, feature_stop)]
        older = list(self.features)[max(0, len(self.features) - max(self.window - len(fresh), 0)):]
        feats = np.stack(older + fresh)  # [W', C, D], W' <= window (more when a step emits > window frames)
        with torch.no_grad():
            x = torch.from_numpy(feats)[None].to(self.lip.device)  # [1, W', C, D]
            pid = torch.full((1,), self.presenter_index, dtype=torch.long, device=self.lip.device)
            out = self.lip.model(x, pid)[0]  # [W', 53]
            # the checkpoint's smoothing, over the window's outputs: past frames on one side, the look-ahead frames
            # on the other (a kernel wider than the look-ahead is cut there and renormalised, as at a clip's end)
            out = smooth_frames(out, self.lip.model.config.smooth_sigma)
            out = out * self.lip.target_std[self.presenter_index] + self.lip.target_mean[self.presenter_index]
        rows = out[len(older):len(older) + k]  # frames first .. stop - 1
        self.features.extend(fresh[:k])
        self.emitted = stop
        return rows.float().cpu().numpy()

    def drain(self, final: bool = False) -> np.ndarray:
        """All ready frames' expression rows, float32 [k, 53]."""
        parts = [self.pop(final)]
        while len(parts[-1]):
            parts.append(self.pop(final))
        return np.concatenate(parts)

    def _encode(self, samples: np.ndarray) -> np.ndarray:
        """Encoder states [H, D] of a window starting on a hop boundary (not normalised)."""
        if self.encoder is None:
            return log_mel(samples, self.align)[: max(1, -(-len(samples) // self.hop))]
        from .speech.whisper import encode_window

        n = max(self.hop, len(samples) // self.hop * self.hop)  # whole states (a window shorter than one: padded)
        return encode_window(self.encoder, np.pad(samples[:n], (0, n - min(n, len(samples)))), self.align.whisper_layer)

    def _frame_features(self, frame: int, states: np.ndarray, lo_hop: int) -> np.ndarray:
        """[C, D] feature stack of absolute ``frame`` from window states (first = absolute hop ``lo_hop``)."""
        centre = int(round((frame + 0.5) / self.fps * SAMPLE_RATE / self.hop))  # as frame_center_hops
        offsets = np.arange(-self.align.half_context, self.align.half_context + 1)
        idx = np.clip(centre + offsets - lo_hop, 0, len(states) - 1)
        return states[idx]
