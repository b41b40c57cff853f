"""One pretraining step (forward, backward, AdamW) of our BertForPreTraining against
`transformers.BertForPreTraining` with the same config, weights and masked batch, in one process.

Both models are checked to give the same loss on the batch before anything is timed; then steps
alternate between the two so that drift in the machine's speed hits both alike. Writes JSON.

    python benchmarks/model_step.py                                   # CPU: mini, batch 32, seq 128
    python benchmarks/model_step.py --device cuda --preset large --dtype bf16 --seq 512 --batch 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.machine import cpu_description
from model import IGNORE_INDEX, BertConfig, BertForPreTraining
from model.flops import peak_bf16_flops, pretraining_step_flops


def build_models(config: BertConfig, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    import transformers

    ours = BertForPreTraining(config)
    hf_config = transformers.BertConfig(**config.to_hf_dict())
    hf_config._attn_implementation = "sdpa"  # its fastest attention, the same kernel ours uses
    theirs = transformers.BertForPreTraining(hf_config)
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"weights do not transfer: {result}")
    return ours.to(device), theirs.to(device)


def masked_batch(
    config: BertConfig, batch: int, seq_len: int, mask_prob: float, device: torch.device, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A random full-length pair batch with `mask_prob` of the tokens masked, in both models' forms."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, config.vocab_size, (batch, seq_len), generator=generator)
    token_type_ids = (torch.arange(seq_len) >= seq_len // 2).long().expand(batch, -1).contiguous()
    masked = max(1, round(mask_prob * seq_len))
    positions = torch.stack([1 + torch.randperm(seq_len - 1, generator=generator)[:masked] for _ in range(batch)])
    labels = torch.gather(input_ids, 1, positions)
    dense_labels = torch.full_like(input_ids, IGNORE_INDEX).scatter_(1, positions, labels)
    input_ids = input_ids.scatter(1, positions, 4)  # [MASK]
    nsp = torch.randint(0, 2, (batch,), generator=generator)
    common = {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": torch.ones_like(input_ids),
    }
    ours = {
        **common,
        "masked_lm_positions": positions,
        "masked_lm_labels": labels,
        "next_sentence_label": nsp,
    }
    theirs = {**common, "labels": dense_labels, "next_sentence_label": nsp}
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return move(ours), move(theirs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig.from_preset(args.preset)
    ours, theirs = build_models(config, device)
    ours_batch, theirs_batch = masked_batch(config, args.batch, args.seq, args.mask_prob, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()

    # Same weights, same batch: the losses must agree before speed means anything.
    ours.eval()
    theirs.eval()
    with torch.no_grad(), autocast:
        ours_loss = ours(**ours_batch).loss.float().item()
        theirs_loss = theirs(**theirs_batch).loss.float().item()
    tolerance = 1e-4 if args.dtype == "fp32" else 5e-2
    if abs(ours_loss - theirs_loss) > tolerance * max(1.0, abs(theirs_loss)):
        raise RuntimeError(f"loss mismatch before timing: ours {ours_loss:.6f}, transformers {theirs_loss:.6f}")
    ours.train()
    theirs.train()

    # Both or neither compiled: the ratio compares the models, not torch.compile.
    compile_ = torch.compile if args.compile else (lambda module: module)
    fused = device.type == "cuda"
    runs = {"ours": (compile_(ours), ours_batch), "transformers": (compile_(theirs), theirs_batch)}
    optimizers = {
        "ours": torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=fused),
        "transformers": torch.optim.AdamW(theirs.parameters(), lr=1e-4, fused=fused),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.warmup + args.steps):
        order = list(runs) if step % 2 == 0 else list(reversed(runs))
        for name in order:
            call, batch = runs[name]
            synchronize(device)
            start = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            with autocast:
                loss = call(**batch).loss
            loss.backward()
            optimizers[name].step()
            synchronize(device)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)

    if args.profile:
        write_profile(args.profile, runs, optimizers, autocast, device)

    masked = ours_batch["masked_lm_positions"].shape[1]
    flops_per_step = args.batch * pretraining_step_flops(config, args.seq, masked)
    peak = peak_flops(device) if args.dtype == "bf16" else None
    results = {}
    for name, samples in times.items():
        step_s = statistics.median(samples)
        results[name] = {
            "step_s_median": step_s,
            "step_s_all": samples,
            "sequences_per_s": args.batch / step_s,
            "tokens_per_s": args.batch * args.seq / step_s,
            "model_tflops_per_s": flops_per_step / step_s / 1e12,
            "mfu": flops_per_step / step_s / peak if peak else None,
        }
    return {
        "benchmark": "model_step",
        "machine": machine_description(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "preset": args.preset,
        "dtype": args.dtype,
        "compile": args.compile,
        "batch": args.batch,
        "seq_len": args.seq,
        "masked_per_sequence": masked,
        "steps": args.steps,
        "model_flops_per_step": flops_per_step,
        "initial_loss": {"ours": ours_loss, "transformers": theirs_loss},
        "results": results,
        "speedup_vs_transformers": results["transformers"]["step_s_median"] / results["ours"]["step_s_median"],
    }


def write_profile(path: Path, runs: dict, optimizers: dict, autocast, device: torch.device) -> None:
    """Two more steps of each model under torch.profiler; the kernels by total device time, as a table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    tables = []
    for name, (call, batch) in runs.items():
        with profile(activities=activities) as profiler:
            for _ in range(2):
                optimizers[name].zero_grad(set_to_none=True)
                with autocast:
                    loss = call(**batch).loss
                loss.backward()
                optimizers[name].step()
            synchronize(device)
        tables.append(f"== {name} (2 steps)\n" + profiler.key_averages().table(sort_by=sort_by, row_limit=40))
    path.write_text("\n\n".join(tables) + "\n")


def peak_flops(device: torch.device) -> float | None:
    return peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--profile", type=Path, help="also write a kernel time table (torch.profiler) here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_step.json"))
    args = parser.parse_args()

    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ours, theirs = result["results"]["ours"], result["results"]["transformers"]
    print(f"{result['machine']} | {args.preset} batch {args.batch} seq {args.seq} {args.dtype}")
    for name, r in (("ours", ours), ("transformers", theirs)):
        mfu = f", MFU {r['mfu']:.1%}" if r["mfu"] else ""
        print(f"  {name:13s} {r['step_s_median'] * 1e3:9.1f} ms/step  {r['sequences_per_s']:8.1f} seq/s{mfu}")
    print(f"  speedup vs transformers: {result['speedup_vs_transformers']:.2f}x  -> {args.out}")


if __name__ == "__main__":
    main()
