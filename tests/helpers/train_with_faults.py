"""Test-only fault injection around `ith_core.fusion.training`: the trainer itself has no fault hooks.

In-process (pytest), with monkeypatch:

    from helpers.train_with_faults import inject
    inject(monkeypatch, fail_after_steps=9)          # crash before the 10th backward of this process
    inject(monkeypatch, fail_in_dev_eval=True)        # crash in the first end-of-epoch dev evaluation
    inject(monkeypatch, fail_in_epoch_end_save=True)  # crash inside the first end-of-epoch save, after
                                                      # accelerate wrote it, before progress.json
    losses = inject(monkeypatch, record_losses=True)  # every batch loss this process computes

As the script `accelerate launch` runs instead of `-m ith_core.fusion.training` (same arguments plus
the fault options, which are removed before the trainer parses its own):

    accelerate launch ... tests/helpers/train_with_faults.py --fail-after-steps 7 --config spec.json
    accelerate launch ... tests/helpers/train_with_faults.py --grad-check DIR --config spec.json

`--grad-check DIR` writes each rank's gradient fingerprint after its first backward (DDP has
all-reduced the gradients by then) and the first input ids it trained on to DIR/grad_rank<r>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class _Patcher:
    """monkeypatch.setattr, or a plain setattr in a launched process (which ends with the run)."""

    def __init__(self, monkeypatch=None) -> None:
        self.monkeypatch = monkeypatch

    def setattr(self, owner: Any, name: str, value: Any) -> None:
        if self.monkeypatch is not None:
            self.monkeypatch.setattr(owner, name, value)
        else:
            setattr(owner, name, value)


def inject(
    monkeypatch=None,
    *,
    fail_after_steps: int | None = None,
    fail_in_dev_eval: bool = False,
    fail_in_epoch_end_save: bool = False,
    grad_check_dir: str | None = None,
    record_losses: bool = False,
) -> list[float]:
    """Installs the chosen faults; returns the list that `record_losses` fills (batch losses, in order)."""
    from accelerate import Accelerator

    import ith_core.fusion.training as train_fusion

    patch = _Patcher(monkeypatch)
    losses: list[float] = []
    backwards = {"n": 0}
    seen: dict[str, Any] = {}
    original_backward = Accelerator.backward
    original_prepare = Accelerator.prepare

    def prepare(self, *args, **kwargs):
        out = original_prepare(self, *args, **kwargs)
        model = out[0] if isinstance(out, tuple) else out
        if grad_check_dir is not None and "model" not in seen:
            seen["model"] = model
            model.register_forward_pre_hook(
                lambda _m, _a, kw: seen.__setitem__("input_ids", kw.get("input_ids")), with_kwargs=True
            )
        return out

    def backward(self, loss, **kwargs):
        if fail_after_steps is not None and backwards["n"] >= fail_after_steps:
            raise RuntimeError(f"injected failure after step {backwards['n']}")
        if record_losses:
            losses.append(float(loss.item()))
        original_backward(self, loss, **kwargs)
        if grad_check_dir is not None and backwards["n"] == 0:
            _write_grad_check(self, seen["model"], seen["input_ids"], Path(grad_check_dir))
        backwards["n"] += 1

    patch.setattr(Accelerator, "prepare", prepare)
    patch.setattr(Accelerator, "backward", backward)

    if fail_in_dev_eval:

        def dev_correct(*args, **kwargs):
            raise RuntimeError("injected failure in the end-of-epoch dev evaluation")

        patch.setattr(train_fusion, "_dev_correct", dev_correct)

    if fail_in_epoch_end_save:
        original_save = Accelerator.save_state

        def save_state(self, output_dir=None, **kwargs):
            result = original_save(self, output_dir, **kwargs)
            if str(output_dir).endswith(train_fusion.EPOCH_END):
                raise RuntimeError(f"injected failure while saving {output_dir}")
            return result

        patch.setattr(Accelerator, "save_state", save_state)
    return losses


def _write_grad_check(accelerator, model, input_ids, out_dir: Path) -> None:
    import torch

    grads = torch.cat([p.grad.detach().flatten().float() for p in model.parameters() if p.grad is not None])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"grad_rank{accelerator.process_index}.json").write_text(
        json.dumps(
            {
                "world_size": accelerator.num_processes,
                "rank": accelerator.process_index,
                "grad_sum": grads.sum().item(),
                "grad_abs_sum": grads.abs().sum().item(),
                "grad_head": grads[:64].tolist(),
                "first_input_ids": input_ids[0].tolist(),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ith_core.fusion.training with test faults")
    parser.add_argument("--fail-after-steps", type=int, default=None)
    parser.add_argument("--grad-check", default=None, metavar="DIR")
    faults, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    inject(fail_after_steps=faults.fail_after_steps, grad_check_dir=faults.grad_check)
    from ith_core.fusion.training import main as train_main

    return train_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
