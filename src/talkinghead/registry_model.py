"""The MLflow "models from code" file of every registered talkinghead model (see registry.py).

MLflow stores this file with each model version and runs it when the version is loaded
(``mlflow.pyfunc.load_model("models:/talkinghead-lip/3")``). The weights are the project's own checkpoint file
(artifact ``checkpoint``: lip.pt or gan.pt, tensors and plain containers only), read by the project's loaders with
``torch.load(weights_only=True)`` (tensorfile.load_checkpoint): no pickled module is stored, and loading a version
can run no code but this file's and the installed talkinghead package's.

- artifact ``lip`` (lip.pt): float32 features [N, C, D] (``talkinghead.lip.speech_features``) -> float32 expression
  [N, 53]; param ``presenter`` picks the presenter's statistics (default: the first one the model was trained on).
- artifact ``gan`` (gan.pt): uint8 composites [B, S, S, 3] -> uint8 generated frames [B, S, S, 3].
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np


class CheckpointModel(mlflow.pyfunc.PythonModel):
    # MLflow's type-hint validation of predict() cannot describe numpy tensors (it warns at every load); the explicit
    # signature logged with each version checks the input instead
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        # the first artifact's key names the model; a GAN may also store its mouth bank (read by speak, not here)
        self.kind, checkpoint = next(iter(context.artifacts.items()))
        self.checkpoint = Path(checkpoint)
        if self.kind == "gan":
            from talkinghead.gan import load_generator

            self.generator = load_generator(self.checkpoint, "cpu")
        elif self.kind == "lip":
            from talkinghead.lip import load_lip_model

            self.lip = load_lip_model(self.checkpoint, "cpu")
        else:
            raise ValueError(f"unknown registered model kind {self.kind!r}")

    def predict(self, context, model_input, params=None):
        array = np.asarray(model_input)
        if self.kind == "gan":
            from talkinghead.gan import generate

            return generate(self.generator, array.astype(np.uint8))
        from talkinghead.lip import predict_with

        presenter = (params or {}).get("presenter") or self.lip.model.config.presenters[0]
        return np.asarray(predict_with(self.lip, array.astype(np.float32), presenter), np.float32)


mlflow.models.set_model(CheckpointModel())
