"""The training and evaluation loaders: shards -> collated batches, resumable to the sample.

Each DataLoader worker of each rank is one stream of `pipeline.data.data_plan`; a worker reads its plan's
windows through webdataset, decodes, optionally re-masks, and collates batches that carry the stream's
plan index. The main process keeps the plan index of the last batch it *consumed* from each stream
(prefetched batches do not count), which is the data position a checkpoint stores.

webdataset's own shuffle buffer would make a resumed run replay everything before the resume point to
rebuild the buffer; the seeded windows here give the same kind of shuffle with a position that is one
integer per stream.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.heads import IGNORE_INDEX
from pipeline.data import data_plan
from pipeline.data.collate import collate, remask
from pipeline.data.packing import collate_packed
from pipeline.data.shard_reader import ShardError, read_shard_members
from preprocessing.manifest import Manifest
from preprocessing.masking import MaskingRule
from preprocessing.randomness import numpy_rng
from preprocessing.shards import Sample, decode_sample
from preprocessing.storage import join

log = logging.getLogger(__name__)

SLOT_KEY = "_stream_slot"  # metadata a worker adds to each batch; popped by TrainBatches
POSITION_KEY = "_plan_index"
SKIPPED_KEY = "_skipped_shards"


@dataclass(frozen=True)
class SplitSpec:
    """What a reader needs to know about one split of a dataset; small and picklable for workers."""

    directory: str
    split: str
    shard_names: tuple[str, ...]
    shard_sizes: tuple[int, ...]
    shard_sha256: tuple[str, ...]
    token_dtype: str
    pad_id: int
    max_predictions: int
    max_seq_length: int

    @classmethod
    def from_manifest(cls, directory: str | Path, manifest: Manifest, split: str) -> SplitSpec:
        shards = manifest.splits[split].shards
        return cls(
            directory=str(directory),
            split=split,
            shard_names=tuple(s.name for s in shards),
            shard_sizes=tuple(s.samples for s in shards),
            shard_sha256=tuple(s.sha256 for s in shards),
            token_dtype=manifest.token_dtype,
            pad_id=manifest.tokenizer.pad_id,
            max_predictions=manifest.max_predictions,
            max_seq_length=manifest.max_seq_length,
        )

    @property
    def samples(self) -> int:
        return sum(self.shard_sizes)

    def url(self, shard: int) -> str:
        return join(self.directory, self.shard_names[shard])


@dataclass(frozen=True)
class StreamOptions:
    micro_batch: int
    seed: int
    window_shards: int = 2
    verify_checksums: bool = True
    skip_bad_shards: bool = False
    remasking: MaskingRule | None = None  # dynamic masking: re-mask every sample each epoch
    packing: bool = False  # several instances per row (pipeline/data/packing.py) instead of one padded row each


@dataclass
class LoaderState:
    """The data position: per stream slot of this rank, the plan index after its last consumed batch,
    and the slot the next batch comes from."""

    world_size: int
    slots: int
    positions: list[int]
    next_slot: int = 0

    @classmethod
    def start(cls, world_size: int, slots: int) -> LoaderState:
        return cls(world_size, slots, [0] * slots, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "slots": self.slots,
            "positions": list(self.positions),
            "next_slot": self.next_slot,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoaderState:
        return cls(values["world_size"], values["slots"], list(values["positions"]), values["next_slot"])


class ShardCache:
    """The last few shards a stream read, so a shard cut between two windows is read once."""

    def __init__(self, spec: SplitSpec, options: StreamOptions, keep: int):
        self.spec, self.options, self.keep = spec, options, keep
        self.shards: dict[int, list[bytes] | None] = {}
        self.newly_skipped: list[str] = []

    def members(self, shard: int) -> list[bytes] | None:
        """The shard's samples, or None for a bad shard skipped under --skip-bad-shards."""
        if shard not in self.shards:
            self.shards[shard] = self._read(shard)
            while len(self.shards) > self.keep:
                del self.shards[next(iter(self.shards))]
        return self.shards[shard]

    def _read(self, shard: int) -> list[bytes] | None:
        spec = self.spec
        sha256 = spec.shard_sha256[shard] if self.options.verify_checksums else None
        try:
            return read_shard_members(spec.url(shard), spec.shard_sizes[shard], sha256)
        except ShardError as error:
            if not self.options.skip_bad_shards:
                raise
            log.warning("skipping a bad shard: %s", error)
            self.newly_skipped.append(spec.shard_names[shard])
            return None


def stream_samples(
    spec: SplitSpec, options: StreamOptions, streams: int, stream: int, start_plan_index: int
) -> Iterator[tuple[int, Sample | None, list[str]]]:
    """(plan index after the sample, the sample or None where its shard was skipped, shards newly
    skipped) for one stream, from `start_plan_index` on, without end."""
    dtype = np.dtype(spec.token_dtype)
    cache = ShardCache(spec, options, keep=options.window_shards + 1)
    plan = data_plan.stream_plan(
        spec.shard_sizes, streams, stream, options.seed, options.window_shards, start_plan_index
    )
    for window, emissions in plan:
        members = {piece.shard: cache.members(piece.shard) for piece in window.pieces}
        for planned in emissions:
            stored = members[planned.shard]
            skipped, cache.newly_skipped = cache.newly_skipped, []
            if stored is None:
                yield planned.plan_index, None, skipped
                continue
            sample = decode_sample(stored[planned.index], dtype)
            if options.remasking is not None:
                rng = numpy_rng(options.seed, "remask", planned.epoch, spec.split, planned.shard, planned.index)
                sample = remask(sample, rng, options.remasking)
            yield planned.plan_index, sample, skipped


def stream_batches(
    spec: SplitSpec, options: StreamOptions, streams: int, stream: int, start_plan_index: int
) -> Iterator[dict[str, Any]]:
    """Collated (or packed) batches of `options.micro_batch` samples, each tagged with the plan index after it."""
    samples: list[Sample] = []
    skipped: list[str] = []
    for plan_index, sample, newly_skipped in stream_samples(spec, options, streams, stream, start_plan_index):
        skipped.extend(newly_skipped)
        if sample is None:
            continue
        samples.append(sample)
        if len(samples) == options.micro_batch:
            if options.packing:
                batch = collate_packed(samples, spec.pad_id, spec.max_predictions, capacity=spec.max_seq_length)
            else:
                batch = collate(samples, spec.pad_id, spec.max_predictions, max_length=spec.max_seq_length)
            batch[POSITION_KEY] = plan_index
            batch[SKIPPED_KEY] = skipped
            yield batch
            samples, skipped = [], []


class TrainStream(IterableDataset):
    """One rank's training batches. DataLoader worker w plays stream slot (w + state.next_slot) % slots, so
    that after a resume the first batch again comes from the slot an uninterrupted run would use next."""

    def __init__(self, spec: SplitSpec, options: StreamOptions, rank: int, state: LoaderState):
        super().__init__()
        self.spec, self.options, self.rank, self.state = spec, options, rank, state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slot = (worker + self.state.next_slot) % self.state.slots
        streams = self.state.world_size * self.state.slots
        stream = self.rank * self.state.slots + slot
        for batch in stream_batches(self.spec, self.options, streams, stream, self.state.positions[slot]):
            batch[SLOT_KEY] = slot
            yield batch


def _ignore_termination_signals(_: int) -> None:
    """Workers leave SIGTERM/SIGINT to the trainer process, which checkpoints and then shuts them down;
    a launcher signals the whole process tree, and a worker dying first would fail the final steps."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class TrainBatches:
    """Iterates a rank's batches and keeps the data position of what was consumed."""

    spec: SplitSpec
    options: StreamOptions
    rank: int
    state: LoaderState
    workers: int  # DataLoader worker processes; 0 reads in the training process (one stream slot)
    pin_memory: bool = False
    skipped_shards: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        data_plan.check_streams(self.spec.shard_sizes, self.state.world_size * self.state.slots, self.spec.split)
        dataset = TrainStream(self.spec, self.options, self.rank, LoaderState.from_dict(self.state.to_dict()))
        self.loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_ignore_termination_signals if self.workers else None,
            prefetch_factor=4 if self.workers else None,
        )
        self.iterator = iter(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        try:
            batch = next(self.iterator)
        except ShardError as error:  # re-raised from a worker with its traceback in the message
            message = str(error).strip().splitlines()[-1]
            raise ShardError(message.removeprefix(f"{ShardError.__module__}.ShardError: ")) from None

        slot = batch.pop(SLOT_KEY)
        self.state.positions[slot] = batch.pop(POSITION_KEY)
        self.state.next_slot = (slot + 1) % self.state.slots
        self.skipped_shards.extend(batch.pop(SKIPPED_KEY))
        return batch

    def close(self) -> None:
        """Stop the worker processes now rather than at garbage collection."""
        shutdown = getattr(self.iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def resume_state(saved: dict[str, Any] | None, world_size: int, slots: int) -> LoaderState:
    """The saved data position, or a fresh one; a position from a different layout (world size or
    loader workers changed) cannot be continued exactly, so those runs restart the data order."""
    if saved is None:
        return LoaderState.start(world_size, slots)
    state = LoaderState.from_dict(saved)
    if state.world_size != world_size or state.slots != slots:
        log.warning(
            "the checkpoint's data position is for world size %d x %d loader workers, this run has %d x %d: "
            "the data order restarts from the beginning instead of continuing exactly",
            state.world_size,
            state.slots,
            world_size,
            slots,
        )
        return LoaderState.start(world_size, slots)
    return state


def evaluation_batches(
    spec: SplitSpec, micro_batch: int, rank: int, world_size: int, max_samples: int | None, verify: bool = True
) -> list[dict[str, torch.Tensor]]:
    """This rank's share of the first `max_samples` validation samples in stored order, in batches.
    Every rank gets the same number of batches (collective ops inside the forward of a sharded model
    need all ranks to take part); a rank short of samples pads with copies whose labels are ignored."""
    total = min(spec.samples, max_samples) if max_samples else spec.samples
    if total < world_size:
        log.warning("the validation split has %d samples for %d ranks: evaluation is skipped", total, world_size)
        return []
    start, stop = data_plan.stream_bounds(total, world_size, rank)
    pieces = data_plan.stream_pieces(spec.shard_sizes, range(len(spec.shard_sizes)), start, stop)
    dtype = np.dtype(spec.token_dtype)
    samples: list[Sample] = []
    for piece in pieces:
        sha256 = spec.shard_sha256[piece.shard] if verify else None
        members = read_shard_members(spec.url(piece.shard), spec.shard_sizes[piece.shard], sha256)
        samples.extend(decode_sample(members[i], dtype) for i in range(piece.first, piece.stop))
    per_rank = -(-total // world_size)
    batches_needed = -(-per_rank // micro_batch)
    batches = [
        collate(samples[i : i + micro_batch], spec.pad_id, spec.max_predictions, max_length=spec.max_seq_length)
        for i in range(0, len(samples), micro_batch)
    ]
    while len(batches) < batches_needed:
        batches.append(ignored_copy(batches[-1]))
    return batches


def ignored_copy(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch that runs through the model but counts for nothing: every label ignored."""
    copy = {name: tensor.clone() for name, tensor in batch.items()}
    copy["masked_lm_labels"].fill_(IGNORE_INDEX)
    copy["next_sentence_label"].fill_(IGNORE_INDEX)
    return copy


def target_counts(
    spec: SplitSpec, vocab_size: int, max_samples: int, verify: bool = True, skip_bad_shards: bool = False
) -> np.ndarray:
    """How often each id is a masked-LM target in the first `max_samples` samples of the split (whole
    shards, in stored order): the unigram distribution a context-free guess would use. An unreadable
    shard raises ShardError, or with `skip_bad_shards` is left out with a warning."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    dtype = np.dtype(spec.token_dtype)
    seen = 0
    for shard, size in enumerate(spec.shard_sizes):
        if seen >= max_samples:
            break
        sha256 = spec.shard_sha256[shard] if verify else None
        try:
            members = read_shard_members(spec.url(shard), size, sha256)
        except ShardError as error:
            if not skip_bad_shards:
                raise
            log.warning("skipping a bad shard while counting the masked-LM targets: %s", error)
            continue
        targets = np.concatenate([decode_sample(member, dtype).masked_lm_ids for member in members])
        counts += np.bincount(targets.astype(np.int64), minlength=vocab_size)[:vocab_size]
        seen += size
    return counts
