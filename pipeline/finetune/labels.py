"""Label names <-> ids for a task head: built from the training labels, applied to the validation labels
with an explicit rule for labels training never saw."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from preprocessing.errors import BertpipeError


class DataError(BertpipeError, ValueError):
    """Input data that cannot be used as given; the message names the file (and line) and what to do."""


def _sort_key(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order ("2" before "10"), then the rest alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


@dataclass(frozen=True)
class LabelMap:
    names: tuple[str, ...]

    @classmethod
    def from_training(cls, labels: Iterable[str], first: Sequence[str] = ()) -> LabelMap:
        """Every distinct label, sorted; `first` (e.g. "O" for NER) gets the lowest ids."""
        seen = set(labels)
        ordered = [label for label in first if label in seen]
        ordered += sorted(seen - set(ordered), key=_sort_key)
        if not ordered:
            raise DataError("the training data has no labels")
        return cls(tuple(ordered))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def ids(self, labels: Sequence[str], source: str, unseen_to: str | None = None) -> list[int]:
        """The ids of `labels`; a label training never saw is an error naming it, or becomes `unseen_to`."""
        index = {name: i for i, name in enumerate(self.names)}
        if unseen_to is not None and unseen_to not in index:
            raise DataError(
                f"--map-unseen-label {unseen_to!r} is not a training label; choose one of {list(self.names)}"
            )
        unseen = sorted({label for label in labels if label not in index})
        if unseen and unseen_to is None:
            raise DataError(
                f"{source} has labels the training data never has: {unseen[:10]}; the head cannot predict them. "
                f"Add examples of them to the training data, or pass --map-unseen-label LABEL to count them as "
                f"one of {list(self.names)[:10]}"
            )
        return [index.get(label, index.get(unseen_to or "", -1)) for label in labels]
