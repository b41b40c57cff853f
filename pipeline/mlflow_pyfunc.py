"""The MLflow pyfunc model that `pipeline.registry` logs (as MLflow "model from code": this file is stored
with the model and run by `mlflow.pyfunc.load_model`, nothing is pickled).

predict: texts containing [MASK] in (a list, or a DataFrame with a "text" column); for each text, the most
likely token at each [MASK] out.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow.models
import mlflow.pyfunc

from pipeline.registry import HF_ARTIFACT

# MLflow asks for type hints on predict to infer a signature; this one takes lists and DataFrames alike.
warnings.filterwarnings("ignore", message="Add type hints to the `predict` method", category=UserWarning)


class BertFillMask(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from model import BertForPreTraining
        from preprocessing.tokenizer import load_tokenizer

        directory = Path(context.artifacts[HF_ARTIFACT])
        self.model = BertForPreTraining.from_pretrained(directory).eval()
        self.tokenizer = load_tokenizer(directory)

    def predict(self, context, model_input, params=None):
        import torch

        texts = list(model_input["text"]) if hasattr(model_input, "columns") else list(model_input)
        mask_id = self.tokenizer.token_to_id("[MASK]")
        limit = self.model.config.max_position_embeddings
        predictions = []
        for text in texts:
            ids = self.tokenizer.encode(text).ids[:limit]
            with torch.no_grad():
                logits = self.model(torch.tensor([ids])).mlm_logits[0]
            masked = [i for i, token in enumerate(ids) if token == mask_id]
            predictions.append([self.tokenizer.id_to_token(int(logits[i].argmax())) for i in masked])
        return predictions


mlflow.models.set_model(BertFillMask())
