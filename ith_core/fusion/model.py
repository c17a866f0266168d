"""The ITH fusion model: a masked LM whose span token states attend to the span's imagined audio.

Method (ith-method.md, stage 5), per span with accepted audio:

    A   = MLP(audio encoder tokens)                 2 layers, ReLU (stage 4)
    O1  = LayerNorm(H_t + MultiHeadAttn(H_t, A, A))  queries: the span's token states H_t
    H_a = LayerNorm(O1 + FFN(O1))                    GELU FFN, dropout
    g   = sigmoid(W_a H_a + W_t H_t)
    out = g * H_a + (1 - g) * H_t                    written back over the span's positions

One `FusionLayer` is shared by all spans of a sentence. It runs on the embedding output (default,
`fusion_layer=-1`) or on the output of encoder layer i, through a forward hook on that module of
the base model, so any BERT-family `AutoModelForMaskedLM` works unchanged (BERT, RoBERTa, ELECTRA,
...): the LM's own forward is called with its attention mask, so padding is masked in every encoder
layer (the reference release forgot this), and the audio padding is masked in the cross-attention.
Spans without audio and examples without spans are simply absent from the span index and stay
untouched.

    model = FusionLM(mlm, audio_dim=768, num_heads=12, ffn_dim=3072, dropout=0.1, fusion_layer=-1)
    out = model(input_ids, attention_mask, labels=..., span_batch=..., span_positions=...,
                span_position_mask=..., span_audio=..., audio_tokens=..., audio_mask=...)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ith_core.config import ConfigError, require
from ith_core.fusion.audio_features import pool_tokens


class AudioProjector(nn.Module):
    """The method's 2-layer MLP (768 -> 768 -> 768, ReLU) from audio-encoder width to LM width.

    Its input is first standardised with fixed statistics of the frozen encoder's outputs over
    the training audios (`set_input_statistics`; identity until set). Why: a frozen encoder's
    tokens are dominated by what every clip shares (position embeddings, the final LayerNorm's
    offsets); what tells one clip from another is a small deviation, about 5x smaller in norm
    for the tiny AST, concentrated in few coordinates per token position. Fed raw, that
    deviation reaches the span state about 1000x weaker than the shared part and its gradient
    is too small to grow it (the ITH synthetic pitch task then stays at chance). The paper
    trains the encoder, which can adapt its output scale; a frozen encoder cannot, so the
    scale is fixed here, as one standardises the inputs of any probe on frozen features. A
    trained encoder's tokens are standardised only when asked (`fusion.standardize_audio`, the
    tiny profile's random AST), with statistics of the encoder as loaded: an affine
    reparametrisation of the MLP's first layer that changes the optimisation, not what the model
    can express. The statistics are buffers: saved and loaded with the fusion weights. The fusion
    layer's equations are unchanged.
    """

    def __init__(self, audio_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(audio_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))
        # (1, D): per channel, or (La, D): per token position and channel (fixed-length encoders
        # such as AST, whose token i is always the same spectro-temporal patch).
        self.register_buffer("input_mean", torch.zeros(1, audio_dim))
        self.register_buffer("input_std", torch.ones(1, audio_dim))

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        require(
            mean.shape == std.shape and mean.dim() == 2 and mean.shape[-1] == self.input_mean.shape[-1],
            "audio statistics",
            f"be two (La or 1, {self.input_mean.shape[-1]}) tensors of one shape",
            (tuple(mean.shape), tuple(std.shape)),
        )
        self.input_mean = mean.detach().to(self.input_mean.device, torch.float32).clone()
        self.input_std = std.detach().to(self.input_std.device, torch.float32).clone()

    def normalise(self, tokens: torch.Tensor) -> torch.Tensor:
        mean, std = self.input_mean, self.input_std
        if mean.shape[0] > 1:
            require(
                tokens.shape[-2] == mean.shape[0],
                "audio tokens",
                f"number {mean.shape[0]} per clip, as the training audios whose statistics the projector holds",
                tokens.shape[-2],
                "encode every audio with the same encoder settings (audio_tokens, clip length)",
            )
        return (tokens.float() - mean) / std

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(tokens).to(self.net[0].weight.dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The statistics' shape is set by the training audios; checkpoints from before they
        # existed were trained without them, which the identity reproduces.
        for name in ("input_mean", "input_std"):
            key = prefix + name
            if key in state_dict:
                setattr(
                    self, name, torch.empty_like(state_dict[key], dtype=torch.float32, device=self.input_mean.device)
                )
            else:
                state_dict[key] = (
                    getattr(self, name).new_zeros(1, self.input_mean.shape[-1])
                    if name == "input_mean"
                    else getattr(self, name).new_ones(1, self.input_mean.shape[-1])
                )
                setattr(self, name, state_dict[key].clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def audio_feature_statistics(
    features, audio_ids, max_audios: int = 4096, min_std_ratio: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of stored encoder tokens over `audio_ids` for `AudioProjector.set_input_statistics`.

    Per token position and channel when every clip has the same number of tokens (AST: 1214, or
    the pooled count), per channel otherwise. At most `max_audios` ids (evenly spaced over the
    sorted ids: deterministic, the same on every rank). A coordinate's std is floored at
    `min_std_ratio` x the root-mean-square std: coordinates that barely vary between clips hold
    fp16 rounding noise (about 1e-3 of the value), which must not be scaled up to unit size.
    """
    ids = sorted(set(audio_ids))
    require(len(ids) >= 2, "audio ids for statistics", "number at least 2", len(ids))
    if len(ids) > max_audios:
        ids = [ids[round(i * (len(ids) - 1) / (max_audios - 1))] for i in range(max_audios)]
    # One pass, each clip read once (a trained encoder computes its tokens on every read): sums
    # per position while every clip has the first one's shape, per channel always.
    first_shape = None
    per_position: tuple[torch.Tensor, torch.Tensor] | None = None
    channel_sum = channel_sq = None
    tokens = 0
    for audio_id in ids:
        t = features.get(audio_id).to(torch.float64)
        if first_shape is None:
            first_shape = t.shape
            per_position = (torch.zeros_like(t), torch.zeros_like(t))
            channel_sum = torch.zeros(t.shape[-1:], dtype=torch.float64)
            channel_sq = torch.zeros_like(channel_sum)
        if per_position is not None and t.shape == first_shape:
            per_position[0].add_(t)
            per_position[1].add_(t * t)
        else:
            per_position = None
        channel_sum += t.sum(0)
        channel_sq += (t * t).sum(0)
        tokens += t.shape[0]
    if per_position is not None:
        total, total_sq = per_position
        count = len(ids)
    else:
        total, total_sq, count = channel_sum, channel_sq, tokens
    shape = total.shape
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    floor = min_std_ratio * var.mean().sqrt().clamp_min(1e-12)
    std = var.sqrt().clamp_min(floor)
    return mean.float().reshape(-1, shape[-1]), std.float().reshape(-1, shape[-1])


class EncodedTokens:
    """Stored input features seen through a model's trainable encoder as it is now: `get(id)` is
    the (pooled) token tensor its projector receives, for `audio_feature_statistics`. Eval mode,
    no gradient; the encoder's train/eval mode is restored after each call."""

    def __init__(self, model: "FusionLM", features) -> None:
        require(model.audio_encoder is not None, "model", "have a trainable audio encoder", None)
        self.model = model
        self.features = features

    @torch.no_grad()
    def get(self, audio_id: str) -> torch.Tensor:
        encoder = self.model.audio_encoder
        was_training = encoder.training
        encoder.eval()
        try:
            weight = next(encoder.parameters())
            inputs = self.features.get(audio_id).to(weight.device, weight.dtype)[None]
            return self.model.encoder_tokens(inputs)[0].float().cpu()
        finally:
            encoder.train(was_training)


class FusionLayer(nn.Module):
    """Cross-attention from span token states to audio tokens, FFN, layer norms and the gate."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_dim: int, dropout: float, layer_norm_eps: float = 1e-5):
        super().__init__()
        require(
            hidden_size % num_heads == 0,
            "fusion.num_heads",
            f"divide the LM hidden size {hidden_size}",
            num_heads,
            "choose a divisor of the hidden size (12 for bert-base)",
        )
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        # As the reference: torch's default LayerNorm eps (1e-5), dropout only after the FFN.
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, hidden_size), nn.Dropout(dropout)
        )
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.gate_audio = nn.Linear(hidden_size, hidden_size)
        self.gate_text = nn.Linear(hidden_size, hidden_size)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
        """text (S, Lt, H) span token states; audio (S, La, H); audio_mask (S, La) True = real token.

        Each query row only attends to its own span's audio, so padded span positions (which the
        caller never writes back) cannot influence real ones.
        """
        attended, _ = self.attn(text, audio, audio, key_padding_mask=~audio_mask.bool(), need_weights=False)
        o1 = self.norm1(text + attended)
        h_a = self.norm2(o1 + self.ffn(o1))
        gate = torch.sigmoid(self.gate_audio(h_a) + self.gate_text(text))
        return gate * h_a + (1.0 - gate) * text

    def gate(self, text: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
        """The gate values g for inspection (same computation as forward)."""
        attended, _ = self.attn(text, audio, audio, key_padding_mask=~audio_mask.bool(), need_weights=False)
        o1 = self.norm1(text + attended)
        h_a = self.norm2(o1 + self.ffn(o1))
        return torch.sigmoid(self.gate_audio(h_a) + self.gate_text(text))


def _base_model(mlm: nn.Module) -> nn.Module:
    base = getattr(mlm, "base_model", None)
    if base is None or base is mlm:
        raise ConfigError(f"{type(mlm).__name__} has no base model; the fusion LM needs an AutoModelForMaskedLM")
    return base


def fusion_site(mlm: nn.Module, fusion_layer: int) -> nn.Module:
    """The module whose output the fusion layer rewrites: the embeddings, or encoder layer i."""
    base = _base_model(mlm)
    if fusion_layer < 0:
        for name in ("embeddings",):
            if hasattr(base, name):
                return getattr(base, name)
        raise ConfigError(
            f"{type(base).__name__} has no 'embeddings' module; fusion.fusion_layer=-1 needs one "
            "(BERT-family models have it)"
        )
    layers = None
    for path in (("encoder", "layer"), ("transformer", "layer"), ("encoder", "layers"), ("layers",)):
        obj: Any = base
        for part in path:
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            layers = obj
            break
    if layers is None:
        raise ConfigError(
            f"{type(base).__name__}: no encoder layer list found for fusion.fusion_layer={fusion_layer}; "
            "use -1 (embedding output)"
        )
    require(
        fusion_layer < len(layers),
        "fusion.fusion_layer",
        f"be -1 or < the LM's {len(layers)} layers",
        fusion_layer,
        "-1 fuses on the embedding output",
    )
    return layers[fusion_layer]


class FusionLM(nn.Module):
    """A masked LM with the ITH fusion layer hooked in; `fusion=False` gives the text-only baseline.

    The baseline is the same LM and heads without any fusion parameter, so the ITH and text-only
    runs differ only in the audio path.
    """

    def __init__(
        self,
        mlm: nn.Module,
        audio_dim: int | None,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        fusion_layer: int = -1,
        fusion: bool = True,
        audio_encoder: nn.Module | None = None,
        pool_to: int | None = None,
    ) -> None:
        super().__init__()
        # A trained encoder's tokens pooled to this many (None: all of them, the method).
        self.pool_to = pool_to if audio_encoder is not None else None
        self.mlm = mlm
        self.fusion_layer = fusion_layer
        self.use_fusion = fusion
        self._ctx: dict[str, torch.Tensor] | None = None
        if fusion:
            hidden = mlm.config.hidden_size
            require(audio_dim is not None and audio_dim >= 1, "audio_dim", "be the audio encoder's width", audio_dim)
            # Trainable AST (the paper's choice) runs inside the model on precomputed input features.
            self.audio_encoder = audio_encoder
            self.projector = AudioProjector(audio_dim, hidden)
            self.fusion = FusionLayer(hidden, num_heads, ffn_dim, dropout)
            self._hook = fusion_site(mlm, fusion_layer).register_forward_hook(self._fuse_hook)

    # -- the hook ------------------------------------------------------------------------------
    def _fuse_hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        ctx = self._ctx
        if ctx is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        fused = self._fuse(hidden, ctx)
        if isinstance(output, tuple):
            return (fused, *output[1:])
        return fused

    def encoder_tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """Stored input features (fbank frames) -> the trained encoder's tokens (pooled if asked)."""
        return pool_tokens(self.audio_encoder(input_values=inputs).last_hidden_state, self.pool_to)

    def encode_audio(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        if self.audio_encoder is not None:
            audio_tokens = self.encoder_tokens(audio_tokens)  # trained end to end
        return self.projector(audio_tokens)

    def _fuse(self, hidden: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        span_batch = ctx["span_batch"]
        if span_batch.numel() == 0:
            if self.training:
                # Keeps every fusion parameter in the graph, so DDP does not wait for gradients
                # that a batch without spans would never produce.
                zero = sum(p.sum() for p in self.parameters_of_fusion()) * 0.0
                return hidden + zero.to(hidden.dtype)
            return hidden
        positions = ctx["span_positions"]  # (S, Lt) token index in the sequence
        position_mask = ctx["span_position_mask"].bool()  # (S, Lt)
        audio = self.encode_audio(ctx["audio_tokens"])  # (A, La, H)
        if self.audio_encoder is not None:
            # Input frames are padded by the feature extractor itself; every encoder token is real.
            audio_mask = torch.ones(audio.shape[:2], dtype=torch.bool, device=audio.device)
        else:
            audio_mask = ctx["audio_mask"].bool()
        span_audio = ctx["span_audio"]  # (S,) index into the audio batch (spans may share audio)
        rows = span_batch[:, None].expand_as(positions)
        text = hidden[rows, positions]  # (S, Lt, H)
        fused = self.fusion(text, audio[span_audio].to(text.dtype), audio_mask[span_audio])
        # Only real span positions are written back; out of place so autograd sees both paths.
        return hidden.index_put((rows[position_mask], positions[position_mask]), fused[position_mask].to(hidden.dtype))

    def parameters_of_fusion(self):
        for module in (self.audio_encoder, self.projector, self.fusion):
            if module is not None:
                yield from module.parameters()

    # -- forward ------------------------------------------------------------------------------
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
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ):
        if self.use_fusion and span_batch is not None:
            self._ctx = {
                "span_batch": span_batch,
                "span_positions": span_positions,
                "span_position_mask": span_position_mask,
                "span_audio": span_audio,
                "audio_tokens": audio_tokens,
                "audio_mask": audio_mask,
            }
        try:
            # Segment ids only where given (sentence pairs, GLUE): single sentences keep the LM's default.
            segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **segments)
        finally:
            # The context belongs to this call only; a later call without spans must see none.
            self._ctx = None


def build_fusion_model(
    mlm: nn.Module, cfg, audio_dim: int | None, fusion: bool = True, audio_encoder: nn.Module | None = None
) -> FusionLM:
    """FusionLM with the settings of a `FusionConfig`."""
    return FusionLM(
        mlm,
        audio_dim=audio_dim,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout,
        fusion_layer=cfg.fusion_layer,
        fusion=fusion,
        audio_encoder=audio_encoder,
        pool_to=cfg.audio_tokens,
    )
