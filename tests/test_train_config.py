"""train.json (TrainConfig, --set overrides, config directories) and the DeepSpeed config checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from model import BertConfig, BertForPreTraining
from pipeline.training.deepspeed_config import (
    BatchSizes,
    build_adamw,
    check_known_keys,
    parameter_groups,
    prepare,
    resolve_batch_sizes,
)
from pipeline.training.train_config import TrainConfig, TrainConfigError, load_config, parse_overrides

LAUNCH_CONFIGS = Path(__file__).resolve().parent.parent / "launch" / "configs"


# -- TrainConfig ------------------------------------------------------------------------------------


def test_from_dict_fills_defaults_and_round_trips():
    config = TrainConfig.from_dict({"warmup_steps": 10, "model": "mini", "model_overrides": {"hidden_size": 64}})
    assert (config.model, config.train_steps, config.warmup, config.seed) == ("mini", 100, 10, 12345)
    assert config.model_overrides == {"hidden_size": 64}
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()


def test_warmup_from_a_proportion_of_the_steps():
    assert TrainConfig.from_dict({"train_steps": 7038, "warmup_proportion": 0.2843}).warmup == 2001
    assert TrainConfig.from_dict({"train_steps": 200, "warmup_proportion": 0.05}).warmup == 10
    assert TrainConfig.from_dict({"train_steps": 200, "warmup_proportion": 0}).warmup == 0


def test_unknown_keys_are_refused_with_the_known_ones_listed():
    with pytest.raises(
        TrainConfigError, match=r"unknown train config key\(s\) \['lr', 'trainsteps'\]; known keys"
    ) as info:
        TrainConfig.from_dict({"warmup_steps": 1, "trainsteps": 5, "lr": 0.1})
    assert "'train_steps'" in str(info.value) and "'shuffle_window_shards'" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train_steps", "100"),
        ("train_steps", 1.5),
        ("train_steps", True),  # JSON true is not a number of steps
        ("seed", False),
        ("lr_end_ratio", True),
        ("lr_decay_power", "0.5"),
        ("warmup_proportion", "0.1"),
        ("model", 3),
        ("model", None),
        ("model_overrides", ["hidden_size", 64]),
        ("dynamic_masking", 1),
        ("verify_checksums", "false"),
    ],
)
def test_values_of_the_wrong_type_are_refused(key, value):
    values = {"warmup_steps": 1, key: value} if key != "warmup_proportion" else {key: value}
    with pytest.raises(TrainConfigError, match=f"train config {key} must be .*, not {re.escape(repr(value))}"):
        TrainConfig.from_dict(values)


def test_ints_are_accepted_where_floats_are_expected_and_none_where_optional():
    config = TrainConfig.from_dict(
        {"warmup_steps": None, "warmup_proportion": 0, "lr_end_ratio": 0, "lr_decay_power": 2}
    )
    assert (config.warmup_steps, config.warmup, config.lr_end_ratio, config.lr_decay_power) == (None, 0, 0, 2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train_steps": 0}, "train_steps must be at least 1, not 0"),
        ({"checkpoint_every": 0}, "checkpoint_every must be at least 1, not 0"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be at least 1"),
        ({"eval_every": -1}, "eval_every must be 0 or more, not -1"),
        ({"loader_workers": -2}, "loader_workers must be 0 or more, not -2"),
        ({"shuffle_window_shards": 0}, "shuffle_window_shards must be at least 1, not 0"),
        ({"warmup_steps": None}, "give exactly one of warmup_steps and warmup_proportion"),
        ({"warmup_proportion": 0.1}, "give exactly one of warmup_steps and warmup_proportion"),
        ({"warmup_steps": None, "warmup_proportion": 1.5}, r"warmup_proportion must be in \[0, 1\], not 1.5"),
        ({"mlm_bias_init": "ones"}, r"mlm_bias_init must be one of \('unigram', 'zeros'\), not 'ones'"),
        ({"attention_init": "random"}, r"attention_init must be one of \('local', 'bert'\), not 'random'"),
        ({"train_steps": 4}, r"warmup_steps must be between 0 and train_steps \(4\), not 5"),
        ({"warmup_steps": -1}, r"warmup_steps must be between 0 and train_steps \(100\), not -1"),
        ({"lr_decay": "cosine"}, r"lr_decay must be one of \('linear', 'polynomial', 'polynomial_total', 'constant'\)"),
        ({"lr_decay_power": 0}, "lr_decay_power must be greater than 0, not 0"),
        ({"lr_end_ratio": 1.5}, r"lr_end_ratio must be in \[0, 1\], not 1.5"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\) or null \(the model's own\), not 1.0"),
    ],
)
def test_impossible_values_are_refused(values, message):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig.from_dict({"warmup_steps": 5, **values})


def test_local_attention_init_leaves_at_most_the_last_layers_heads_global_and_needs_an_even_width():
    from pipeline.training.pretrain import check_attention_init, global_heads

    tiny = BertConfig.from_preset("tiny")  # 2 heads
    assert global_heads(TrainConfig.from_dict({"warmup_steps": 1}), tiny) == 2  # the default, -1: all of them
    assert global_heads(TrainConfig.from_dict({"warmup_steps": 1, "global_attention_heads": 1}), tiny) == 1
    check_attention_init(TrainConfig.from_dict({"warmup_steps": 1, "global_attention_heads": 1}), tiny)
    check_attention_init(TrainConfig.from_dict({"warmup_steps": 1, "global_attention_heads": 2}), tiny)
    too_many = TrainConfig.from_dict({"warmup_steps": 1, "global_attention_heads": 3})
    with pytest.raises(TrainConfigError, match=r"global_attention_heads must be in 0\.\.2 \(the model's layers have 2"):
        check_attention_init(too_many, tiny)
    check_attention_init(TrainConfig.from_dict({**too_many.to_dict(), "attention_init": "bert"}), tiny)
    odd = BertConfig.from_preset("tiny", hidden_size=129, num_attention_heads=1)
    with pytest.raises(TrainConfigError, match="attention_init 'local' needs an even hidden_size, not 129"):
        check_attention_init(TrainConfig.from_dict({"warmup_steps": 1}), odd)


def test_dropout_replaces_the_models_own_while_training_only():
    from pipeline.training.pretrain import training_model_config

    tiny = BertConfig.from_preset("tiny")
    assert training_model_config(TrainConfig.from_dict({"warmup_steps": 1}), tiny) == tiny
    trained = training_model_config(TrainConfig.from_dict({"warmup_steps": 1, "dropout": 0.0}), tiny)
    assert (trained.hidden_dropout_prob, trained.attention_probs_dropout_prob) == (0.0, 0.0)
    assert trained.replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1) == tiny
    assert tiny.hidden_dropout_prob == 0.1  # the config checkpoints store is left as it was


def test_parse_overrides_reads_json_values_and_falls_back_to_strings():
    pairs = [
        "train_steps=5",
        "model=mini",
        "warmup_proportion=0.25",
        "warmup_steps=null",
        "dynamic_masking=true",
        'model_overrides={"hidden_size": 64}',
        "deepspeed_config=a=b.json",
        "seed=",
    ]
    assert parse_overrides(pairs) == {
        "train_steps": 5,
        "model": "mini",
        "warmup_proportion": 0.25,
        "warmup_steps": None,
        "dynamic_masking": True,
        "model_overrides": {"hidden_size": 64},
        "deepspeed_config": "a=b.json",
        "seed": "",
    }
    assert parse_overrides([]) == {}
    for bad in ("train_steps", "=5"):
        with pytest.raises(TrainConfigError, match=f"--set takes key=value, not {bad!r}"):
            parse_overrides([bad])


def write_config(directory: Path, train: dict, deepspeed: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.json").write_text(json.dumps(train), encoding="utf-8")
    if deepspeed is not None:
        (directory / "deepspeed.json").write_text(json.dumps(deepspeed), encoding="utf-8")
    return directory


def test_load_config_from_a_directory_or_a_file_with_overrides(tmp_path):
    deepspeed = {"train_micro_batch_size_per_gpu": 4}
    directory = write_config(tmp_path / "run", {"train_steps": 50, "warmup_steps": 5}, deepspeed)
    loaded = load_config(directory, parse_overrides(["train_steps=80", "seed=3"]))
    assert (loaded.train.train_steps, loaded.train.warmup_steps, loaded.train.seed) == (80, 5, 3)
    assert loaded.deepspeed == deepspeed
    assert loaded.train_path == directory / "train.json"
    assert loaded.deepspeed_path == directory / "deepspeed.json"
    assert load_config(directory / "train.json").train.train_steps == 50
    # Overrides are checked like the file itself.
    with pytest.raises(TrainConfigError, match=r"unknown train config key\(s\) \['steps'\]"):
        load_config(directory, {"steps": 3})
    with pytest.raises(TrainConfigError, match="train config train_steps must be int, not 'many'"):
        load_config(directory, parse_overrides(["train_steps=many"]))


def test_load_config_finds_the_deepspeed_file_beside_train_json_or_where_told(tmp_path):
    other = tmp_path / "elsewhere" / "ds.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"train_batch_size": 8}), encoding="utf-8")
    directory = write_config(tmp_path / "run", {"warmup_steps": 1, "deepspeed_config": "zero3.json"})
    (directory / "zero3.json").write_text(json.dumps({"train_batch_size": 16}), encoding="utf-8")
    assert load_config(directory).deepspeed == {"train_batch_size": 16}
    assert load_config(directory, deepspeed_path=str(other)).deepspeed == {"train_batch_size": 8}
    assert load_config(directory, {"deepspeed_config": str(other)}).deepspeed_path == other


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(TrainConfigError, match=r"no training config at .*missing; pass a directory"):
        load_config(tmp_path / "missing")
    directory = write_config(tmp_path / "run", {"warmup_steps": 1})
    with pytest.raises(TrainConfigError, match=r"no DeepSpeed config at .*deepspeed\.json"):
        load_config(directory)
    (directory / "deepspeed.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TrainConfigError, match=r"deepspeed\.json is not valid JSON"):
        load_config(directory)
    (directory / "train.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TrainConfigError, match=r"train\.json must hold a JSON object"):
        load_config(directory)


@pytest.mark.parametrize("name", ["tiny", "phase1", "phase2"])
def test_the_shipped_configs_load_and_prepare(name):
    loaded = load_config(LAUNCH_CONFIGS / name)
    on_gpu = name != "tiny"
    world_size = 8 if on_gpu else 1
    config, optimizer, sizes = prepare(loaded.deepspeed, world_size, on_gpu=on_gpu)
    assert config["train_batch_size"] == sizes.global_batch == sizes.micro * sizes.accumulation * world_size
    assert optimizer.lr == loaded.deepspeed["optimizer"]["params"]["lr"]


# -- batch sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ds_config", "world_size", "expected"),
    [
        ({"train_micro_batch_size_per_gpu": 4}, 2, (4, 1, 8)),
        ({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3}, 2, (4, 3, 24)),
        ({"train_batch_size": 32}, 4, (8, 1, 32)),
        ({"train_batch_size": 32, "gradient_accumulation_steps": 2}, 4, (4, 2, 32)),
        ({"train_batch_size": 65536, "train_micro_batch_size_per_gpu": 64}, 8, (64, 128, 65536)),
        ({"train_batch_size": 65536, "train_micro_batch_size_per_gpu": 64}, 64, (64, 16, 65536)),
        (
            {"train_batch_size": 24, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3},
            2,
            (4, 3, 24),
        ),
    ],
)
def test_batch_sizes_from_any_two_of_three(ds_config, world_size, expected):
    sizes = resolve_batch_sizes(ds_config, world_size)
    assert sizes == BatchSizes(expected[0], expected[1], world_size)
    assert sizes.global_batch == expected[2]


@pytest.mark.parametrize(
    ("ds_config", "world_size", "message"),
    [
        ({}, 1, "needs train_micro_batch_size_per_gpu or train_batch_size"),
        ({"gradient_accumulation_steps": 2}, 1, "needs train_micro_batch_size_per_gpu or train_batch_size"),
        (
            {"train_batch_size": 30},
            4,
            "train_batch_size 30 does not divide by gradient_accumulation_steps 1 x world size 4",
        ),
        ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 3}, 2, "make it a multiple of 6"),
        (
            {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2},
            2,
            r"train_batch_size 32 != .* = 16; drop one of the three",
        ),
        ({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 0}, 2, "must be a positive integer, not 0"),
        ({"train_batch_size": 8, "gradient_accumulation_steps": 0}, 2, "must be a positive integer, not 0"),
        ({"train_micro_batch_size_per_gpu": -4}, 1, "must be a positive integer, not -4"),
        ({"train_micro_batch_size_per_gpu": 2.5}, 1, "must be a positive integer, not 2.5"),
        ({"train_micro_batch_size_per_gpu": True}, 1, "must be a positive integer, not True"),
    ],
)
def test_impossible_batch_sizes_are_refused(ds_config, world_size, message):
    with pytest.raises(TrainConfigError, match=message):
        resolve_batch_sizes(ds_config, world_size)


# -- prepare ----------------------------------------------------------------------------------------

ADAMW = {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.8, 0.99], "eps": 1e-8, "weight_decay": 0.02}}
LAMB = {"type": "Lamb", "params": {"lr": 6e-3, "weight_decay": 0.01}}


def test_prepare_completes_the_batch_sizes_and_builds_adamw_itself():
    ds_config = {
        "train_batch_size": 32,
        "train_micro_batch_size_per_gpu": 4,
        "optimizer": ADAMW,
        "bf16": {"enabled": True},
    }
    config, optimizer, sizes = prepare(ds_config, 2, on_gpu=False)
    assert sizes == BatchSizes(4, 4, 2)
    assert config == {
        "train_batch_size": 32,
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 4,
        "bf16": {"enabled": True},
    }
    assert (optimizer.kind, optimizer.lr, optimizer.weight_decay) == ("adamw", 1e-3, 0.02)
    assert "optimizer" in ds_config and "gradient_accumulation_steps" not in ds_config  # input left as it was


def test_prepare_defaults_to_adamw_and_a_weight_decay_of_one_hundredth():
    _, optimizer, _ = prepare({"train_micro_batch_size_per_gpu": 2}, 1, on_gpu=False)
    assert (optimizer.kind, optimizer.lr, optimizer.weight_decay) == ("adamw", 1e-4, 0.01)
    _, optimizer, _ = prepare(
        {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "adam", "params": {"lr": 2e-4}}}, 1, False
    )
    assert (optimizer.kind, optimizer.lr, optimizer.weight_decay) == ("adamw", 2e-4, 0.01)


def test_lamb_is_left_to_deepspeed_on_gpu_and_refused_on_cpu_with_adamw_suggested():
    ds_config = {"train_micro_batch_size_per_gpu": 2, "optimizer": LAMB, "fp16": {"enabled": True}}
    config, optimizer, _ = prepare(ds_config, 1, on_gpu=True)
    assert config["optimizer"] == LAMB
    assert (optimizer.kind, optimizer.lr, optimizer.weight_decay) == ("deepspeed", 6e-3, 0.01)
    with pytest.raises(TrainConfigError, match="needs a GPU; on CPU set the DeepSpeed optimizer type to AdamW"):
        prepare({"train_micro_batch_size_per_gpu": 2, "optimizer": LAMB}, 1, on_gpu=False)


def test_a_deepspeed_scheduler_section_is_refused():
    ds_config = {"train_micro_batch_size_per_gpu": 2, "scheduler": {"type": "WarmupLR", "params": {}}}
    with pytest.raises(TrainConfigError, match=r"remove the DeepSpeed 'scheduler' section.*train\.json"):
        prepare(ds_config, 1, on_gpu=True)


def test_keys_deepspeed_would_ignore_are_refused_with_the_closest_known_one():
    ds = {"train_micro_batch_size_per_gpu": 4, "zero_optimisation": {"stage": 2}, "gradient_clippin": 1.0}
    with pytest.raises(TrainConfigError) as error:
        prepare(ds, 2, on_gpu=False)
    assert str(error.value).startswith(
        "DeepSpeed does not know the key(s) 'gradient_clippin' (did you mean 'gradient_clipping'?), "
        "'zero_optimisation' (did you mean 'zero_optimization'?)"
    )
    with pytest.raises(TrainConfigError, match=r"the key\(s\) 'flux_capacitor' in"):
        prepare({"train_micro_batch_size_per_gpu": 4, "flux_capacitor": 1}, 1, on_gpu=False)
    known = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}
    prepare(known, 2, on_gpu=False)
    refused = r"(?s)DeepSpeed refuses the DeepSpeed config: .*stagee.*Extra inputs are not permitted"
    with pytest.raises(TrainConfigError, match=refused):
        prepare({**known, "zero_optimization": {"stagee": 2}}, 2, on_gpu=False)


def test_fp16_needs_a_gpu_and_excludes_bf16():
    fp16 = {"train_micro_batch_size_per_gpu": 2, "fp16": {"enabled": True}}
    with pytest.raises(TrainConfigError, match=r"fp16 needs a GPU; on CPU use bf16"):
        prepare(fp16, 1, on_gpu=False)
    assert prepare(fp16, 1, on_gpu=True)[0]["fp16"] == {"enabled": True}
    assert prepare({**fp16, "fp16": {"enabled": False}}, 1, on_gpu=False)[1].kind == "adamw"
    with pytest.raises(TrainConfigError, match="enable one of fp16 and bf16, not both"):
        prepare({**fp16, "bf16": {"enabled": True}}, 1, on_gpu=True)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"type": "SGD", "params": {"lr": 0.1}}, r"unsupported optimizer type 'SGD'; use AdamW, or Lamb on GPU"),
        ({"type": "AdamW", "params": {"weight_decay": 0.01}}, "needs params.lr"),
    ],
)
def test_unusable_optimizer_sections_are_refused(optimizer, message):
    with pytest.raises(TrainConfigError, match=message):
        prepare({"train_micro_batch_size_per_gpu": 2, "optimizer": optimizer}, 1, on_gpu=False)


# -- parameter groups -------------------------------------------------------------------------------


def test_parameter_groups_skip_decay_on_biases_and_layer_norms_and_count_tied_weights_once():
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=100))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    decay, no_decay = parameter_groups(model, 0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    names = {id(param): name for name, param in model.named_parameters()}
    decay_names = [names[id(p)] for p in decay["params"]]
    no_decay_names = [names[id(p)] for p in no_decay["params"]]
    # tiny has 2 layers: 3 embedding tables + 6 matrices per layer + pooler, MLM transform and NSP weights.
    assert len(decay_names) == 18 and len(no_decay_names) == 28
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in decay_names)
    assert all(n.endswith("bias") or "LayerNorm.weight" in n for n in no_decay_names)
    assert "bert.embeddings.word_embeddings.weight" in decay_names
    assert "cls.predictions.bias" in no_decay_names and "bert.embeddings.LayerNorm.weight" in no_decay_names
    grouped = decay["params"] + no_decay["params"]
    assert len({id(p) for p in grouped}) == len(grouped) == len(list(model.parameters()))
    assert sum(p.numel() for p in grouped) == sum(p.numel() for p in model.parameters())


def test_frozen_parameters_are_left_out_of_the_groups():
    model = BertForPreTraining(BertConfig.from_preset("tiny", vocab_size=100))
    model.bert.embeddings.position_embeddings.weight.requires_grad_(False)
    decay, no_decay = parameter_groups(model, 0.01)
    assert len(decay["params"]) == 17 and len(no_decay["params"]) == 28
    assert all(p is not model.bert.embeddings.position_embeddings.weight for p in decay["params"])


def test_build_adamw_uses_the_groups_and_the_deepspeed_params():
    model = torch.nn.Linear(3, 2)
    _, spec, _ = prepare({"train_micro_batch_size_per_gpu": 1, "optimizer": ADAMW}, 1, on_gpu=False)
    optimizer = build_adamw(parameter_groups(model, spec.weight_decay), spec, on_gpu=False)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.02, 0.0]
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 1]
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (1e-3, (0.8, 0.99), 1e-8)


def test_deepspeed_keys_are_set_per_run_without_touching_the_file(tmp_path):
    deepspeed = {"train_micro_batch_size_per_gpu": 32, "optimizer": {"type": "AdamW", "params": {"lr": 2e-3}}}
    directory = write_config(tmp_path / "run", {"warmup_steps": 1}, deepspeed)
    overrides = parse_overrides(
        [
            "deepspeed.train_micro_batch_size_per_gpu=16",
            "deepspeed.optimizer.params.lr=1e-4",
            "deepspeed.zero_optimization.stage=3",
            "train_steps=7",
        ]
    )
    loaded = load_config(directory, overrides)
    assert loaded.train.train_steps == 7
    assert loaded.deepspeed == {
        "train_micro_batch_size_per_gpu": 16,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "zero_optimization": {"stage": 3},
    }
    assert json.loads((directory / "deepspeed.json").read_text()) == deepspeed  # the file is as it was
    with pytest.raises(TrainConfigError, match=r"deepspeed\.optimizer\.type\.x: optimizer\.type is 'AdamW'"):
        load_config(directory, {"deepspeed.optimizer.type.x": 1})
    with pytest.raises(TrainConfigError, match="name a DeepSpeed key"):
        load_config(directory, {"deepspeed.": 1})
    # a misspelt key reaches DeepSpeed's key check, as one in the file would
    misspelt = load_config(directory, {"deepspeed.zero_optimisation.stage": 2}).deepspeed
    with pytest.raises(TrainConfigError, match=r"'zero_optimisation' \(did you mean 'zero_optimization'\?\)"):
        check_known_keys(misspelt)
