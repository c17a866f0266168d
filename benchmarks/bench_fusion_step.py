"""One fusion-LM training step at paper size: seconds per step and peak memory, bf16 on a GPU.

    .venv/bin/python benchmarks/bench_fusion_step.py --device cuda --precision bf16   # gpu_check.sh runs this
    .venv/bin/python benchmarks/bench_fusion_step.py --small                          # CPU smoke run

BERT-base masked LM (random weights, the paper's shapes) with the ITH fusion layer of the
method's defaults (12 heads, FFN 3072) built by `ith_core.fusion.model.build_fusion_model`; a batch of
32 sentences of 128 tokens, one 4-token span each, fused with 1214 frozen-AST tokens of width 768
(the precomputed features of the frozen-encoder variant); AdamW. The step is forward + backward
+ optimiser under torch.autocast in the given precision; warm-up steps are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.environment import environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("bf16", "fp16", "no"), default="bf16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--small", action="store_true", help="a 2-layer, 128-wide model and 64 audio tokens (smoke)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from transformers import BertConfig, BertForMaskedLM

    from ith_core.config import FusionConfig
    from ith_core.fusion.model import build_fusion_model
    from ith_core.models.paper_architectures import BERT_BASE_CONFIG

    torch.manual_seed(0)
    bert = dict(BERT_BASE_CONFIG)
    audio_tokens, audio_dim, seq = 1214, 768, 128
    fusion_cfg = FusionConfig()
    if args.small:
        bert.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
        audio_tokens, audio_dim = 64, 32
        fusion_cfg = FusionConfig(num_heads=4, ffn_dim=256)
    device = torch.device(args.device)
    model = build_fusion_model(BertForMaskedLM(BertConfig(**bert)), fusion_cfg, audio_dim).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-5)
    b = args.batch
    vocab = BertConfig(**bert).vocab_size
    input_ids = torch.randint(1000, vocab, (b, seq), device=device)
    labels = torch.full((b, seq), -100, device=device)
    labels[:, 10] = input_ids[:, 10]
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(b, seq, dtype=torch.long, device=device),
        "labels": labels,
        "span_batch": torch.arange(b, device=device),
        "span_positions": torch.arange(20, 24, device=device).expand(b, 4).contiguous(),
        "span_position_mask": torch.ones(b, 4, dtype=torch.long, device=device),
        "span_audio": torch.arange(b, device=device),
        "audio_tokens": torch.randn(b, audio_tokens, audio_dim, device=device).to(torch.float16),
        "audio_mask": torch.ones(b, audio_tokens, dtype=torch.long, device=device),
    }
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}[args.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    cuda = device.type == "cuda"
    for _ in range(2):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds, losses = [], []
    for _ in range(args.steps):
        started = time.perf_counter()
        losses.append(step())
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    result = {
        "benchmark": "fusion_training_step",
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "precision": args.precision,
        "torch": torch.__version__,
        "small": args.small,
        "batch": b,
        "seq_len": seq,
        "audio_tokens": audio_tokens,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_step": sorted(seconds)[len(seconds) // 2],
        "seconds": [round(s, 4) for s in seconds],
        "environment": environment("cuda" if cuda else "cpu"),
        "examples_per_s": round(b / sorted(seconds)[len(seconds) // 2], 2),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        "losses_finite": all(map(lambda x: x == x and abs(x) < float("inf"), losses)),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
