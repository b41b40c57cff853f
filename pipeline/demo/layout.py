"""What the demo reads (the bundled corpus and task) and where it writes, and its two sizes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYDOCS = ROOT / "tests" / "data" / "pydocs"
DEMO_CONFIG = ROOT / "launch" / "configs" / "demo"
DEFAULT_HOSTFILE = ROOT / "launch" / "hostfile"  # the launch scripts read it when HOSTFILE is unset
REGISTERED_MODEL = "bert-demo"  # launch/configs/demo/train.json: registered_model_name
CLASSIFIER_MODEL = f"{REGISTERED_MODEL}-classify"


@dataclass(frozen=True)
class DemoSize:
    """How much the demo does: `full` for `make demo`, `small` for the test suite."""

    vocab_size: int
    dupe_factor: int
    pretrain_steps: int
    eval_every: int  # pretraining steps between held-out evaluations (each improving one is registered)
    finetune_epochs: int
    finetune_learning_rate: float


SIZES = {
    "full": DemoSize(
        vocab_size=8192,
        dupe_factor=5,
        pretrain_steps=900,
        eval_every=300,
        finetune_epochs=8,
        finetune_learning_rate=3e-4,
    ),
    "small": DemoSize(
        vocab_size=2048,
        dupe_factor=1,
        pretrain_steps=12,
        eval_every=6,
        finetune_epochs=1,
        finetune_learning_rate=3e-4,
    ),
}
CORPUS = PYDOCS / "demo_corpus.txt"
CLASSIFY_TRAIN = PYDOCS / "tasks" / "classify_train.jsonl"
CLASSIFY_VALIDATION = PYDOCS / "tasks" / "classify_validation.jsonl"
MAX_SEQ_LENGTH = 128  # launch/preprocess.sh --phase 1


@dataclass(frozen=True)
class DemoLayout:
    """The demo's outputs, all under one directory."""

    root: Path

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dataset(self) -> Path:
        return self.data / f"seq{MAX_SEQ_LENGTH}"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def finetune_pretrained(self) -> Path:
        return self.root / "finetune" / "pretrained"

    @property
    def finetune_scratch(self) -> Path:
        return self.root / "finetune" / "scratch"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{(self.mlflow / 'mlflow.db').resolve()}"

    @property
    def cache(self) -> Path:
        """Registry downloads ($BERTPIPE_CACHE), kept with the rest."""
        return self.root / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def summary_markdown(self) -> Path:
        return self.root / "summary.md"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def loss_curves(self) -> Path:
        return self.root / "loss_curves.png"

    def outputs(self) -> list[Path]:
        """Everything the demo writes; `--overwrite` removes these and nothing else."""
        directories = [self.tokenizer, self.data, self.pretrain, self.root / "finetune", self.mlflow, self.cache]
        return [*directories, self.logs, self.summary_markdown, self.summary_json, self.loss_curves]

    def existing_outputs(self) -> list[Path]:
        return [path for path in self.outputs() if path.exists()]

    def remove_outputs(self) -> None:
        for path in self.existing_outputs():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
