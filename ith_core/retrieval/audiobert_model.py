"""The AudioBERT model: a LoRA masked LM whose span's first wordpiece hears a retrieved clip.

Per span with a retrieved clip (top-1 of `ith_core.retrieval.queries`): AST runs on the clip's stored
input features, its `last_hidden_state` is mean-pooled over all tokens to one vector,
projected to the LM's width only when the widths differ (the release has no projection for
base models), and that vector replaces the WORD embedding of the span's first wordpiece. The
LM's own embedding layer then adds positions and token types and applies LayerNorm and dropout
once (the release ran the embedding layer twice: its bug 3). The LM gets the attention mask (bug
4), the loss is taken at the [MASK] positions only (bug 5; `loss_on_all_tokens=True` replicates
the release's loss on every token, padding included), LoRA (peft) sits on query/key/value with
every LM weight frozen (MLM head included; `train_lm_head` lets the head train for random-weight
LMs), and AST and the projection train. Any BERT-family
`AutoModelForMaskedLM` works (the substitution hooks the module `get_input_embeddings()`
returns; nothing reads a `.bert` attribute: bug 12).

The forward signature and batch keys are FusionLM's (`ith_core.fusion.model`), so `train_fusion`'s
loop, `lm_data.FusionCollator` and `evaluate.predict` drive it unchanged:

    model = build_audiobert_model(mlm, cfg.audiobert, audio_encoder=ast, audio_dim=None)
    out = model(input_ids, attention_mask, labels=..., span_batch=..., span_positions=...,
                span_position_mask=..., span_audio=..., audio_tokens=..., audio_mask=...)

`audio_tokens` holds AST input features (A, frames, mel bins) when the model owns an AST, or
precomputed mean-pooled AST vectors (A, 1, D) for the frozen-encoder variant.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from ith_core.config import AudioBertConfig, require

LORA_TARGETS = ("query", "key", "value")


class AudioBertLM(nn.Module):
    def __init__(
        self,
        mlm: nn.Module,
        audio_encoder: nn.Module | None,
        audio_dim: int,
        *,
        lora_r: int,
        lora_alpha: int,
        lora_dropout: float,
        loss_on_all_tokens: bool = False,
        target_modules: tuple[str, ...] = LORA_TARGETS,
        train_lm_head: bool = False,
    ) -> None:
        super().__init__()
        require(audio_dim is not None and audio_dim >= 1, "audio_dim", "be the audio encoder's width", audio_dim)
        hidden = mlm.config.hidden_size
        names = {name.rsplit(".", 1)[-1] for name, _ in mlm.named_modules()}
        missing = [t for t in target_modules if t not in names]
        require(
            not missing,
            "LoRA target modules",
            f"exist in {type(mlm).__name__} (BERT-family attention names query/key/value)",
            missing,
        )
        # peft freezes every weight of the wrapped LM, the MLM head included; only lora_A/B train.
        self.lm = get_peft_model(
            mlm,
            LoraConfig(
                r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=list(target_modules),
                bias="none",
            ),
        )
        if train_lm_head:
            # The MLM head is every child of the LM but its encoder (BERT `cls`, RoBERTa `lm_head`);
            # its decoder weight is the tied word-embedding matrix, which stays frozen.
            tied = mlm.get_input_embeddings().weight
            for name, child in mlm.named_children():
                if name != mlm.base_model_prefix:
                    for p in child.parameters():
                        if p is not tied:
                            p.requires_grad_(True)
        self.audio_encoder = audio_encoder
        self.audio_dim = int(audio_dim)
        self.projection = nn.Linear(audio_dim, hidden) if audio_dim != hidden else None
        # Fixed standardisation of the pooled audio vector (identity until `set_audio_statistics`).
        self.register_buffer("audio_mean", torch.zeros(1, audio_dim))
        self.register_buffer("audio_std", torch.ones(1, audio_dim))
        self.loss_on_all_tokens = loss_on_all_tokens
        self._ctx: tuple | None = None
        self._hook = self.lm.get_input_embeddings().register_forward_hook(self._substitute)

    # -- audio ---------------------------------------------------------------------------------
    def audio_vectors(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """(A, frames, mel) AST inputs or (A, 1, D) stored vectors -> (A, LM width), one vector per clip."""
        vectors = (self.pooled_audio(audio_tokens).float() - self.audio_mean) / self.audio_std
        if self.projection is not None:
            vectors = self.projection(vectors.to(self.projection.weight.dtype))
        return vectors

    def pooled_audio(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """The mean over all AST tokens of each clip (A, audio_dim), before standardisation."""
        if self.audio_encoder is not None:
            dtype = next(self.audio_encoder.parameters()).dtype
            return self.audio_encoder(input_values=audio_tokens.to(dtype)).last_hidden_state.mean(1)
        return audio_tokens.float().mean(1)

    def set_audio_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        require(
            mean.shape == std.shape == self.audio_mean.shape,
            "audio statistics",
            f"be two {tuple(self.audio_mean.shape)} tensors",
            (tuple(mean.shape), tuple(std.shape)),
        )
        self.audio_mean = mean.detach().to(self.audio_mean.device, torch.float32).clone()
        self.audio_std = std.detach().to(self.audio_std.device, torch.float32).clone()

    def audio_parameters(self):
        for module in (self.audio_encoder, self.projection):
            if module is not None:
                yield from module.parameters()

    def _substitute(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        ctx = self._ctx
        if ctx is None:
            return output
        rows, cols, vectors = ctx
        if rows is None:  # a training batch without spans: keep the audio path in the graph (DDP)
            return output + vectors.to(output.dtype)
        # Out of place, so autograd sees both the replaced rows and the rest.
        return output.index_put((rows, cols), vectors.to(output.dtype))

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        span_batch: torch.Tensor | None = None,
        span_positions: torch.Tensor | None = None,
        span_position_mask: torch.Tensor | None = None,
        span_audio: torch.Tensor | None = None,
        audio_tokens: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        **_: Any,
    ):
        if span_batch is not None and span_batch.numel() > 0:
            # Positions are ascending within a span (lm_data), so column 0 is its first wordpiece.
            self._ctx = (span_batch, span_positions[:, 0], self.audio_vectors(audio_tokens)[span_audio])
        elif self.training and any(True for _ in self.audio_parameters()):
            self._ctx = (None, None, sum(p.sum() for p in self.audio_parameters()) * 0.0)
        if labels is not None and self.loss_on_all_tokens:
            # The release's loss: every position is a target (the sentence with the answer filled
            # in), padding included.
            labels = torch.where(labels == -100, input_ids, labels)
        try:
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        finally:
            # The context belongs to this call only.
            self._ctx = None

    # -- trainable state -----------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything training changes: LoRA weights, the audio encoder and the projection (buffers too)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if k in trainable or k.startswith(("audio_encoder.", "projection.", "audio_mean", "audio_std"))
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"AudioBERT weights do not fit this model: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}; rebuild it with the settings it was trained with"
            )
        self.load_state_dict(state, strict=False)


def build_audiobert_model(
    mlm: nn.Module, settings: AudioBertConfig | dict, audio_encoder: nn.Module | None, audio_dim: int | None = None
) -> AudioBertLM:
    """AudioBertLM with the settings of an `AudioBertConfig` (or its dump).

    `audio_encoder`: the AST to train (its width is the audio width), or None for the frozen
    variant, whose stored vectors are `audio_dim` wide.
    """
    cfg = settings if isinstance(settings, AudioBertConfig) else AudioBertConfig(**settings)
    if audio_encoder is not None:
        audio_dim = audio_encoder.config.hidden_size
        audio_encoder.requires_grad_(True)  # the release trains all of AST
    return AudioBertLM(
        mlm,
        audio_encoder,
        audio_dim,
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        loss_on_all_tokens=cfg.loss_on_all_tokens,
        target_modules=tuple(cfg.lora_targets),
        train_lm_head=cfg.train_lm_head,
    )


@torch.no_grad()
def audio_statistics(
    model: AudioBertLM, features, audio_ids, max_audios: int = 4096, batch_size: int = 32, min_std_ratio: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (1, audio_dim), of the pooled audio vectors of `audio_ids` (the training clips).

    At most `max_audios` ids, evenly spaced over the sorted ids (the same on every rank). A
    dimension's std is floored at `min_std_ratio` x the root-mean-square std, so dimensions that
    barely vary are not blown up to unit size.
    """
    ids = sorted(set(audio_ids))
    require(len(ids) >= 2, "audio ids for statistics", "number at least 2", len(ids))
    if len(ids) > max_audios:
        ids = [ids[round(i * (len(ids) - 1) / (max_audios - 1))] for i in range(max_audios)]
    device = model.audio_mean.device
    was_training = model.training
    model.eval()
    try:
        vectors = torch.cat(
            [
                model.pooled_audio(
                    torch.stack([features.get(a) for a in ids[i : i + batch_size]]).to(device).float()
                ).double()
                for i in range(0, len(ids), batch_size)
            ]
        )
    finally:
        model.train(was_training)
    mean = vectors.mean(0, keepdim=True)
    std = vectors.std(0, keepdim=True)
    std = std.clamp_min(min_std_ratio * std.pow(2).mean().sqrt().clamp_min(1e-12))
    return mean.float(), std.float()
