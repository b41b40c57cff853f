"""What the demo reads (the bundled corpus and task) and where it writes, and its two sizes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo.downstream import FinetuneRun, check_fraction, check_learning_rates, percent

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
    finetune_epochs: int  # over a fold's training examples; a subset runs as many updates (epochs_for_subset)
    finetune_learning_rates: tuple[float, ...]  # each arm runs at every one, and is compared at its best on validation
    finetune_fractions: tuple[float, ...]  # of the labelled training examples; 1.0 among them
    finetune_seeds: int  # each (fraction, arm) is fine-tuned with seeds 0 .. finetune_seeds - 1

    def __post_init__(self) -> None:
        for fraction in self.finetune_fractions:
            check_fraction(fraction)
        if 1.0 not in self.finetune_fractions:
            raise ValueError("the fractions must include 1.0: that run is the one registered")
        if list(self.finetune_fractions) != sorted(set(self.finetune_fractions)):
            raise ValueError(f"the fractions must increase, without repeats: {self.finetune_fractions}")
        check_learning_rates(self.finetune_learning_rates)
        if self.finetune_seeds < 1:
            raise ValueError(f"at least one fine-tuning seed is needed, got {self.finetune_seeds}")


SIZES = {
    "full": DemoSize(
        vocab_size=8192,
        # README, "Sizing the data": (2,000 steps x 64) / (3.0 sequences a KB x 1,940 KB) = 22 passes, so that
        # the run reads most pairs once instead of the same pairs 4.5 times over (launch/configs/README.md)
        dupe_factor=20,
        pretrain_steps=2000,
        eval_every=500,
        finetune_epochs=8,
        finetune_learning_rates=(3e-4, 1e-3),
        finetune_fractions=(0.1, 0.3, 1.0),
        finetune_seeds=3,
    ),
    "small": DemoSize(
        vocab_size=2048,
        dupe_factor=1,
        pretrain_steps=12,
        eval_every=6,
        finetune_epochs=1,
        finetune_learning_rates=(3e-4,),
        finetune_fractions=(0.5, 1.0),
        finetune_seeds=1,
    ),
}
CORPUS = PYDOCS / "demo_corpus.txt"
CLASSIFY_TRAIN = PYDOCS / "tasks" / "classify_train.jsonl"  # the labelled paragraphs the demo splits
FOLDS = 3  # CLASSIFY_TRAIN dealt into stratified folds; seed s tests on fold s % FOLDS
VALIDATION_FRACTION = 0.2  # of the other folds, carved out (stratified) to choose the epoch and learning rate
SPLIT_SEED = 0
MAX_SEQ_LENGTH = 128  # launch/preprocess.sh --phase 1


def missing_checkout_files() -> list[Path]:
    """What the demo reads from a checkout of the repository and an installed package lacks: the bundled
    corpus and task, the demo's config and the launch scripts."""
    needed = [CORPUS, CLASSIFY_TRAIN, DEMO_CONFIG / "train.json", ROOT / "launch" / "pretrain.sh"]
    return [path for path in needed if not path.is_file()]


def fold_of_seed(seed: int) -> int:
    """The fold a seed's runs are tested on (seeds beyond FOLDS test the folds again, with other weights)."""
    return seed % FOLDS


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
    def tasks(self) -> Path:
        """The labelled task as the fine-tuning runs read it: per fold the test, validation and training
        files carved from CLASSIFY_TRAIN, and the training subsets of the fractions below 1."""
        return self.root / "tasks"

    @property
    def corpus(self) -> Path:
        """CORPUS less every labelled paragraph (each is a test paragraph in one fold): what the vocabulary and
        the pretraining data are made from."""
        return self.root / "corpus.txt"

    def task_test(self, fold: int) -> Path:
        return self.tasks / f"classify_fold{fold}_test.jsonl"

    def task_train(self, fold: int) -> Path:
        return self.tasks / f"classify_fold{fold}_train.jsonl"

    def task_validation(self, fold: int) -> Path:
        return self.tasks / f"classify_fold{fold}_validation.jsonl"

    def task_subset(self, fraction: float, seed: int) -> Path:
        """The training file of a run; both arms of a (fraction, seed) read the same one."""
        fold = fold_of_seed(seed)
        if fraction == 1.0:
            return self.task_train(fold)
        return self.tasks / f"classify_fold{fold}_train_{percent(fraction)}pct_seed{seed}.jsonl"

    @property
    def finetune(self) -> Path:
        return self.root / "finetune"

    def finetune_run(self, run: FinetuneRun) -> Path:
        """One run's output; its name is also the MLflow run's name, so it names the arm."""
        return self.finetune / run.label

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
        directories = [self.tokenizer, self.data, self.pretrain, self.tasks, self.finetune, self.mlflow, self.cache]
        return [*directories, self.corpus, self.logs, self.summary_markdown, self.summary_json, self.loss_curves]

    def existing_outputs(self) -> list[Path]:
        return [path for path in self.outputs() if path.exists()]

    def remove_outputs(self) -> None:
        for path in self.existing_outputs():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
