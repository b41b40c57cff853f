"""The real Beam job on a small real corpus: determinism across workers, the shard contract read
back with plain webdataset and with tarfile + numpy, manifest counts, reruns and bad input."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import shutil
import sys
import tarfile
from pathlib import Path

import msgpack
import numpy as np
import pytest
import webdataset as wds
import zstandard

from preprocessing import preprocess
from preprocessing.beam_job import JobParams
from preprocessing.documents import ReadStats, text_documents
from preprocessing.masking import unmask
from preprocessing.pairing import Document
from preprocessing.planning import assign, plan_buckets
from preprocessing.preprocess import PreprocessError
from preprocessing.sentences import SentenceSplitter
from preprocessing.shards import BLOCK
from preprocessing.tokenizer import TokenizerError, load_tokenizer, tokenizer_files, train_wordpiece

CORPUS = Path(__file__).parent / "data" / "pydocs" / "corpus.txt"
PARAMS = JobParams(dupe_factor=2, validation_fraction=0.1, bucket_mb=0.1, shard_mb=0.15, seed=7)
IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def workers(n: int) -> list[str]:
    return [
        "--runner=FnApiRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={n}",
        "--default_sdk_harness_log_level=WARNING",
    ]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    directory = tmp_path_factory.mktemp("tokenizer")
    for name, data in tokenizer_files(train_wordpiece(lines, vocab_size=3000, lowercase=True)).items():
        (directory / name).write_bytes(data)
    return directory


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, tokenizer_dir) -> dict[int, Path]:
    out = {}
    for n in (1, 2):
        directory = tmp_path_factory.mktemp(f"dataset{n}") / "ds"
        outcome = preprocess.run([str(CORPUS)], str(tokenizer_dir), str(directory), PARAMS, workers(n))
        assert not outcome.skipped
        out[n] = directory
    return out


@pytest.mark.slow
def test_one_and_two_workers_write_identical_bytes(datasets):
    one, two = datasets[1], datasets[2]
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    assert "manifest.json" in names and "vocab.txt" in names and ".work" not in names
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


@pytest.mark.slow
def test_documents_through_the_runners_shuffle_give_the_same_bytes(tmp_path, datasets, tokenizer_dir):
    """The mode distributed runners use (documents shuffled by Beam, not through work files)."""
    directory = tmp_path / "ds"
    preprocess.run([str(CORPUS)], str(tokenizer_dir), str(directory), PARAMS, IN_PROCESS, shuffle_documents=True)
    for path in datasets[1].iterdir():
        assert (directory / path.name).read_bytes() == path.read_bytes(), path.name


def read_with_tarfile(path: Path, manifest: dict) -> list[tuple[str, dict]]:
    token = np.dtype(manifest["token_dtype"]).newbyteorder("<")
    position = np.dtype(manifest["position_dtype"]).newbyteorder("<")
    samples = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, extension = member.name.split(".", 1)
            assert extension == "msgpack"
            fields = msgpack.unpackb(tar.extractfile(member).read())
            fields["input_ids"] = np.frombuffer(fields["input_ids"], dtype=token)
            fields["masked_lm_ids"] = np.frombuffer(fields["masked_lm_ids"], dtype=token)
            fields["masked_lm_positions"] = np.frombuffer(fields["masked_lm_positions"], dtype=position)
            samples.append((key, fields))
    return samples


@pytest.mark.slow
def test_manifest_matches_the_files(datasets):
    directory = datasets[2]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["parameters"]["seed"] == 7 and manifest["token_dtype"] == "uint16"
    totals = {"samples": 0, "tokens": 0}
    for split, info in manifest["splits"].items():
        assert info["shards"], split
        sizes, lengths = [], []
        for shard in info["shards"]:
            path = directory / shard["name"]
            assert shard["name"].startswith(f"{split}-")
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            assert path.stat().st_size == shard["bytes"]
            samples = read_with_tarfile(path, manifest)
            assert len(samples) == shard["samples"]
            assert sum(len(s["input_ids"]) for _, s in samples) == shard["tokens"]
            assert sum(len(s["masked_lm_positions"]) for _, s in samples) == shard["masked_tokens"]
            sizes.append(len(samples))
            lengths += [len(s["input_ids"]) for _, s in samples]
        assert max(sizes) - min(sizes) <= 1
        assert sum(sizes) == info["samples"]
        # the length histogram and its mean, against the decoded instances
        assert sum(info["length_histogram"]["counts"]) == info["samples"] == len(lengths)
        width = info["length_histogram"]["bin_width"]
        assert info["length_histogram"]["counts"] == np.bincount((np.array(lengths) - 1) // width).tolist()
        assert info["mean_length"] == sum(lengths) / len(lengths)
        assert info["padding_share"] == 1 - info["mean_length"] / PARAMS.max_seq_length
        # as many shards as bring them nearest --shard-mb, counting tar headers and padding
        member_bytes = 0
        for shard in info["shards"]:
            with tarfile.open(directory / shard["name"]) as tar:
                member_bytes += sum(BLOCK + -(-m.size // BLOCK) * BLOCK for m in tar.getmembers())
        target = PARAMS.shard_mb * 2**20
        assert len(info["shards"]) == max(1, round(member_bytes / target)), split
        if split == "train":
            assert len(info["shards"]) >= 3
            assert 0.8 * target < np.mean([s["bytes"] for s in info["shards"]]) < 1.25 * target
        totals["samples"] += info["samples"]
        totals["tokens"] += info["tokens"]
    assert manifest["totals"]["samples"] == totals["samples"] == manifest["counters"]["instances"]
    assert manifest["totals"]["tokens"] == totals["tokens"] == manifest["counters"]["tokens"]
    assert manifest["counters"]["documents"] == 372


@pytest.mark.slow
def test_samples_follow_the_contract(datasets, tokenizer_dir):
    directory = datasets[2]
    manifest = json.loads((directory / "manifest.json").read_text())
    ids = manifest["tokenizer"]["special_token_ids"]
    cls, sep, mask, pad = ids["[CLS]"], ids["[SEP]"], ids["[MASK]"], ids["[PAD]"]
    random_next = total = 0
    keys = set()
    for split in ("train", "validation"):
        for shard in manifest["splits"][split]["shards"]:
            for key, s in read_with_tarfile(directory / shard["name"], manifest):
                tokens, positions, b = s["input_ids"], s["masked_lm_positions"], s["segment_b_start"]
                assert len(tokens) <= 128 and "." not in key and key not in keys
                keys.add(key)
                original = unmask(tokens, positions, s["masked_lm_ids"])
                assert original[0] == cls and original[b - 1] == sep and original[-1] == sep
                assert np.sum(original == sep) == 2 and not np.isin(original, [pad, mask]).any()
                maskable = len(tokens) - 3
                assert len(positions) == min(20, max(1, round(0.15 * maskable)))
                assert not np.isin(original[positions], [cls, sep, pad]).any()
                assert np.all(np.diff(positions.astype(int)) > 0)
                random_next += s["next_sentence_label"]
                total += 1
    assert total == manifest["totals"]["samples"]
    assert 0.4 < random_next / total < 0.7  # 1/2, plus the chunks of one sentence, which are always random


@pytest.mark.slow
def test_plain_webdataset_reads_every_sample(datasets):
    directory = datasets[2]
    manifest = json.loads((directory / "manifest.json").read_text())
    urls = [str(directory / s["name"]) for s in manifest["splits"]["train"]["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == manifest["splits"]["train"]["samples"]
    first = msgpack.unpackb(samples[0]["msgpack"])
    assert set(first) == {"input_ids", "masked_lm_positions", "masked_lm_ids", "segment_b_start", "next_sentence_label"}


@pytest.mark.slow
def test_no_document_straddles_the_split(datasets, tokenizer_dir):
    """Every A segment of a validation sample lies in a validation document, and vice versa."""
    tokenizer = load_tokenizer(tokenizer_dir)
    splitter = SentenceSplitter()
    plan = plan_buckets(CORPUS.stat().st_size, PARAMS.bucket_mb, PARAMS.validation_fraction)
    streams = {"train": [], "validation": []}
    with CORPUS.open("rb") as stream:
        for raw in text_documents(stream, CORPUS.name, 0, CORPUS.stat().st_size, ReadStats()):
            sentences = [s for p in raw.paragraphs for s in splitter.split(p)]
            ids = [e.ids for e in tokenizer.encode_batch_fast(sentences, add_special_tokens=False)]
            tokens = Document.from_sentences(ids).tokens.astype("<i4").tobytes()
            streams[assign(raw.key, PARAMS.seed, PARAMS.validation_fraction, plan)[0]].append(tokens)
    joined = {split: b"|".join(parts) for split, parts in streams.items()}
    manifest = json.loads((datasets[2] / "manifest.json").read_text())
    for split in ("validation", "train"):
        for shard in manifest["splits"][split]["shards"][:2]:
            for _, s in read_with_tarfile(datasets[2] / shard["name"], manifest):
                original = unmask(s["input_ids"], s["masked_lm_positions"], s["masked_lm_ids"])
                segment_a = original[1 : s["segment_b_start"] - 1].astype("<i4").tobytes()
                assert segment_a in joined[split]


@pytest.mark.slow
def test_rerun_is_a_no_op_and_a_different_recipe_is_refused(datasets, tokenizer_dir):
    directory = datasets[1]
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    outcome = preprocess.run([str(CORPUS)], str(tokenizer_dir), str(directory), PARAMS, IN_PROCESS)
    assert outcome.skipped
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before
    changed = JobParams(**{**PARAMS.to_dict(), "dupe_factor": 1})
    with pytest.raises(PreprocessError, match=r"different recipe \(dupe_factor: 2 -> 1\).*--overwrite"):
        preprocess.run([str(CORPUS)], str(tokenizer_dir), str(directory), changed, IN_PROCESS)
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before


@pytest.mark.slow
def test_overwrite_replaces_and_removes_stale_shards(tmp_path, datasets, tokenizer_dir):
    directory = tmp_path / "ds"
    shutil.copytree(datasets[1], directory)
    changed = JobParams(**{**PARAMS.to_dict(), "dupe_factor": 1, "shard_mb": 10.0})
    outcome = preprocess.run([str(CORPUS)], str(tokenizer_dir), str(directory), changed, IN_PROCESS, overwrite=True)
    shards = sorted(p.name for p in directory.glob("*.tar"))
    assert shards == ["train-000000.tar", "validation-000000.tar"]
    assert outcome.manifest.parameters["dupe_factor"] == 1


def test_foreign_files_in_the_output_are_not_touched(tmp_path, tokenizer_dir):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PreprocessError, match=r"not empty .*notes\.txt.*--overwrite"):
        preprocess.run([str(CORPUS)], str(tokenizer_dir), str(tmp_path), PARAMS, IN_PROCESS)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_inputs_are_checked_before_the_pipeline(tmp_path, tokenizer_dir):
    with pytest.raises(PreprocessError, match=r"matches no file"):
        preprocess.run([str(tmp_path / "missing-*.txt")], str(tokenizer_dir), str(tmp_path / "o"), PARAMS)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(PreprocessError, match="every input file is empty"):
        preprocess.run([str(tmp_path / "empty.txt")], str(tokenizer_dir), str(tmp_path / "o"), PARAMS)
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[MASK]\nword\n")
    with pytest.raises(TokenizerError, match=r"\['\[SEP\]'\]"):
        preprocess.run([str(CORPUS)], str(tmp_path / "vocab"), str(tmp_path / "o"), PARAMS)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_compressed_jsonl_and_text_with_bad_records(tmp_path, tokenizer_dir):
    paragraphs = [p for p in CORPUS.read_text(encoding="utf-8").split("\n\n") if p.strip()][:60]
    with gzip.open(tmp_path / "part-0.jsonl.gz", "wt", encoding="utf-8") as handle:
        for i, text in enumerate(paragraphs[:30]):
            handle.write(json.dumps({"id": i, "body": text}) + "\n")
        handle.write("{broken json\n")
        handle.write(json.dumps({"id": 99, "body": ""}) + "\n")
    with bz2.open(tmp_path / "part-1.jsonl.bz2", "wt", encoding="utf-8") as handle:
        for i, text in enumerate(paragraphs[30:45]):
            handle.write(json.dumps({"id": i, "body": text}) + "\n")
    # zstd as the `zstd` tool writes a long input: several frames one after another
    frames = [
        zstandard.ZstdCompressor().compress("".join(json.dumps({"body": t}) + "\n" for t in part).encode("utf-8"))
        for part in (paragraphs[45:52], paragraphs[52:60])
    ]
    (tmp_path / "part-2.jsonl.zst").write_bytes(b"".join(frames))
    params = JobParams(**{**PARAMS.to_dict(), "input_format": "jsonl", "text_field": "body", "whole_word_mask": True})
    outcome = preprocess.run(
        [str(tmp_path / "*.jsonl.gz"), str(tmp_path / "*.jsonl.bz2"), str(tmp_path / "*.jsonl.zst")],
        str(tokenizer_dir),
        str(tmp_path / "out"),
        params,
        IN_PROCESS,
    )
    counters = outcome.manifest.counters
    assert counters["documents"] == 61 and counters["malformed_records"] == 1 and counters["empty_documents"] == 1
    assert outcome.manifest.totals["samples"] > 50
    assert outcome.beam_counters["documents"] == 61  # the runner's metrics agree with the manifest


@pytest.mark.slow
def test_parquet_row_groups(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    documents = [d for d in CORPUS.read_text(encoding="utf-8").split("\n\n") if d.strip()][:40]
    table = pa.table({"content": [*documents, None], "id": list(range(len(documents) + 1))})
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=15)  # three row groups
    params = JobParams(**{**PARAMS.to_dict(), "input_format": "parquet", "text_field": "content"})
    outcome = preprocess.run(
        [str(tmp_path / "docs.parquet")], str(tokenizer_dir), str(tmp_path / "out"), params, IN_PROCESS
    )
    assert outcome.manifest.counters["documents"] == 40
    assert outcome.manifest.counters["malformed_records"] == 1  # the null row
    assert outcome.manifest.totals["samples"] > 30

    wrong = JobParams(**{**params.to_dict(), "text_field": "body"})
    with pytest.raises(ValueError, match=r"has no column 'body' \(columns: \['content', 'id'\]\).*--text-field"):
        preprocess.run([str(tmp_path / "docs.parquet")], str(tokenizer_dir), str(tmp_path / "out2"), wrong, IN_PROCESS)


@pytest.mark.slow
def test_shards_do_not_depend_on_where_the_corpus_lives(tmp_path, datasets, tokenizer_dir):
    moved = tmp_path / "elsewhere" / CORPUS.name
    moved.parent.mkdir()
    shutil.copy(CORPUS, moved)
    outcome = preprocess.run([str(moved)], str(tokenizer_dir), str(tmp_path / "ds"), PARAMS, IN_PROCESS)
    assert outcome.manifest.inputs == ({"path": str(moved), "bytes": CORPUS.stat().st_size},)
    for path in datasets[1].glob("*.tar"):
        assert (tmp_path / "ds" / path.name).read_bytes() == path.read_bytes(), path.name


def test_common_directory():
    from preprocessing.beam_job import common_directory

    assert common_directory(["/a/b/c.txt", "/a/d/e.txt"]) == "/a/"
    assert common_directory(["/x/y/z.txt"]) == "/x/y/"
    assert common_directory(["gs://bucket/c/1.txt", "gs://bucket/c/2.txt"]) == "gs://bucket/c/"
    assert common_directory(["a.txt", "b.txt"]) == ""


def test_a_retried_bundle_rewrites_the_same_bytes(tmp_path, tokenizer_dir):
    """Runners retry failed bundles; each step's files depend only on its input, so a second
    attempt replaces them with the same bytes and leaves no temporary file behind."""
    from preprocessing.beam_job import ReadAndTokenize, ReadTask

    tokenizer_json = load_tokenizer(tokenizer_dir).to_str()
    plan = plan_buckets(CORPUS.stat().st_size, PARAMS.bucket_mb, PARAMS.validation_fraction)
    task = ReadTask(0, str(CORPUS), CORPUS.name, 0, 200_000, False)
    attempts = []
    for _ in range(2):
        step = ReadAndTokenize(PARAMS, plan, tokenizer_json, str(tmp_path))
        step.setup()
        outputs = [o for o in step.process(task) if isinstance(o, tuple)]
        attempts.append((outputs, (tmp_path / "documents-000000.msgpack").read_bytes()))
    assert attempts[0] == attempts[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents-000000.msgpack"]


def test_unsupported_compression_and_impossible_parameters_fail_early(tmp_path, tokenizer_dir):
    (tmp_path / "corpus.txt.lz4").write_bytes(b"\x04\x22\x4d\x18 not really lz4")
    with pytest.raises(ValueError, match=r"corpus\.txt\.lz4: unsupported compression; use \.gz, \.bz2, \.xz or \.zst"):
        preprocess.run([str(tmp_path / "corpus.txt.lz4")], str(tokenizer_dir), str(tmp_path / "o"), PARAMS)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"max_predictions_per_seq=200 must be between 1 and .* = 125"):
        JobParams(max_predictions_per_seq=200)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        JobParams(validation_fraction=1.0)
    with pytest.raises(ValueError, match=r"input format 'csv' is not one of"):
        JobParams(input_format="csv")


def test_binary_files_named_as_text_are_refused_before_any_output(tmp_path, tokenizer_dir):
    """A shared library, a gzip file and UTF-16 text, each renamed .txt, beside a real text file: the job says
    what each one is and writes nothing."""
    library = Path(sys.executable).resolve()  # an ELF executable
    (tmp_path / "library.txt").write_bytes(library.read_bytes()[:100_000])
    (tmp_path / "compressed.txt").write_bytes(gzip.compress(CORPUS.read_bytes()[:50_000]))
    (tmp_path / "wide.txt").write_bytes("Some text.\n\nMore text.\n".encode("utf-16"))
    shutil.copy(CORPUS, tmp_path / "real.txt")
    with pytest.raises(PreprocessError) as raised:
        preprocess.run([str(tmp_path / "*.txt")], str(tokenizer_dir), str(tmp_path / "o"), PARAMS, IN_PROCESS)
    message = str(raised.value)
    assert "library.txt is an executable or shared library, not text: leave it out of --input" in message
    assert "compressed.txt is gzip-compressed, not text: name it .gz so that it is decompressed" in message
    assert "wide.txt holds NUL bytes: it is binary, or text in an encoding other than UTF-8 (UTF-16?)" in message
    assert "real.txt" not in message and not (tmp_path / "o").exists()
    gzipped_library = tmp_path / "only" / "library.txt.gz"
    gzipped_library.parent.mkdir()
    gzipped_library.write_bytes(gzip.compress(library.read_bytes()[:100_000]))  # sniffed after decompression
    with pytest.raises(PreprocessError, match=r"library\.txt\.gz is an executable or shared library"):
        preprocess.run([str(gzipped_library)], str(tokenizer_dir), str(tmp_path / "o"), PARAMS, IN_PROCESS)


@pytest.mark.slow
def test_real_shards_collate_into_model_batches(datasets):
    import torch

    from model import BertConfig, BertForPreTraining
    from pipeline.data.collate import collate
    from pipeline.data.dataset_check import check_against_model, load_manifest
    from preprocessing.shards import decode_sample

    manifest = load_manifest(datasets[2])
    config = BertConfig.from_preset("tiny", vocab_size=manifest.tokenizer.vocab_size)
    check_against_model(manifest, config)
    shard = datasets[2] / manifest.splits["train"].shards[0].name
    dtype = np.dtype(manifest.token_dtype)
    with tarfile.open(shard) as tar:
        samples = [decode_sample(tar.extractfile(m).read(), dtype) for m in tar.getmembers()[:16]]
    batch = collate(samples, pad_id=0, max_predictions=manifest.max_predictions)
    assert batch["input_ids"].shape[1] % 8 == 0
    out = BertForPreTraining(config)(**batch)
    assert out.mlm_count.item() == sum(len(s.masked_lm_positions) for s in samples)
    assert torch.isfinite(out.loss) and 5 < out.mlm_loss.item() < 12  # ~ln(3000) = 8 at initialisation


def test_a_zstd_input_reads_as_its_text_line_by_line(tmp_path):
    """Several frames back to back, lines longer than a frame's boundary: the same lines and documents as the
    uncompressed file, read as a stream."""
    from preprocessing import storage

    text = CORPUS.read_bytes()[:200_000]
    half = text.index(b"\n", len(text) // 2) + 7  # a frame boundary inside a line
    packed = zstandard.ZstdCompressor().compress(text[:half]) + zstandard.ZstdCompressor().compress(text[half:])
    (tmp_path / "corpus.txt.zst").write_bytes(packed)
    (tmp_path / "corpus.txt").write_bytes(text)
    with storage.open_input(str(tmp_path / "corpus.txt.zst")) as stream:
        assert stream.readlines() == text.splitlines(keepends=True)
    read = {}
    for name in ("corpus.txt", "corpus.txt.zst"):
        with storage.open_input(str(tmp_path / name)) as stream:
            read[name] = [d.paragraphs for d in text_documents(stream, name, 0, 1 << 62, ReadStats())]
    assert read["corpus.txt"] == read["corpus.txt.zst"] and len(read["corpus.txt"]) > 10


@pytest.mark.slow
def test_a_large_task_hands_on_its_documents_in_parts_and_the_shards_stay_the_same(
    tmp_path, tokenizer_dir, datasets, monkeypatch
):
    """With the held bytes capped low, one read task of the whole corpus (gzip: one task) writes several work
    files instead of holding every tokenized document, and the dataset is byte for byte the uncapped one's."""
    from preprocessing import beam_job
    from preprocessing.beam_job import ReadAndTokenize, ReadTask

    monkeypatch.setattr(beam_job, "FLUSH_BYTES", 64 << 10)
    monkeypatch.setattr(beam_job, "TOKENIZE_BATCH_SENTENCES", 256)  # the held bytes are checked per batch
    tokenizer_json = load_tokenizer(tokenizer_dir).to_str()
    plan = plan_buckets(CORPUS.stat().st_size, PARAMS.bucket_mb, PARAMS.validation_fraction)
    step = ReadAndTokenize(PARAMS, plan, tokenizer_json, str(tmp_path / "work"))
    step.setup()
    (tmp_path / "work").mkdir()
    slices = [o for o in step.process(ReadTask(0, str(CORPUS), CORPUS.name, 0, 1 << 62, False)) if isinstance(o, tuple)]
    files = sorted(p.name for p in (tmp_path / "work").iterdir())
    parts = ["documents-000000.msgpack", *(f"documents-000000-{k}.msgpack" for k in range(1, len(files)))]
    assert len(files) > 3 and sorted(parts) == files
    assert {path for _, (path, _, _) in slices} == {str(tmp_path / "work" / name) for name in files}

    corpus = tmp_path / "corpus.txt.gz"
    corpus.write_bytes(gzip.compress(CORPUS.read_bytes()))
    capped = tmp_path / "capped"
    preprocess.run([str(corpus)], str(tokenizer_dir), str(capped), PARAMS, IN_PROCESS)
    whole = tmp_path / "whole"
    monkeypatch.setattr(beam_job, "FLUSH_BYTES", 1 << 40)
    preprocess.run([str(corpus)], str(tokenizer_dir), str(whole), PARAMS, IN_PROCESS)
    tars = sorted(p.name for p in whole.glob("*.tar"))
    assert tars and tars == sorted(p.name for p in capped.glob("*.tar"))
    for name in tars:
        assert (capped / name).read_bytes() == (whole / name).read_bytes(), name
