"""The paper's checkpoints at full size with random weights, built offline from their published configs.

`build_paper_architecture(role)` gives the modules of one role (`profiles.ROLES`) for shape and
memory checks without a download; the `*_CONFIG` dicts spell out each checkpoint's config.json
(or the stable-audio-tools model_config.json it was converted from).

    from ith_core.models.paper_architectures import build_paper_architecture
    parts = build_paper_architecture("audio_encoder")   # {"model": ASTModel, "feature_extractor": ...}
"""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderOobleck, StableAudioDiTModel
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    BertConfig,
    BertForMaskedLM,
    BertForTokenClassification,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    RobertaConfig,
    RobertaForMaskedLM,
    T5Config,
    T5EncoderModel,
)

from ith_core.config import require
from ith_core.models.profiles import ROLES

# bert-base-uncased is BertConfig()'s defaults (vocab 30522, 12 x 768, 12 heads, 3072 FFN).
BERT_BASE_CONFIG: dict[str, Any] = {}

# roberta-base's config.json: 50265 byte-level BPE tokens, 12 x 768, 12 heads, 3072 FFN, 514 positions
# (RoBERTa offsets positions by the padding id), one token type, LayerNorm eps 1e-5.
ROBERTA_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# stable-audio-open-1.0, from its stable-audio-tools model_config.json as mapped by diffusers'
# scripts/convert_stable_audio.py: DiT sample_size 2097152 / 2048, io_channels 64, embed_dim 1536
# over 24 heads (head dim 64), depth 24, cond_token_dim 768 (12 key/value heads of 64),
# global_cond_dim 1536; these equal the diffusers defaults of StableAudioDiTModel.
STABLE_AUDIO_DIT_CONFIG: dict[str, Any] = {
    "sample_size": 1024,
    "in_channels": 64,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "num_key_value_attention_heads": 12,
    "out_channels": 64,
    "cross_attention_dim": 768,
    "time_proj_dim": 256,
    "global_states_input_dim": 1536,
    "cross_attention_input_dim": 768,
}
# Oobleck pretransform of the same model_config.json: channels 128, c_mults [1, 2, 4, 8, 16],
# strides [2, 4, 4, 8, 8] (hop 2048), latent_dim 64, stereo, 44.1 kHz; = AutoencoderOobleck defaults.
STABLE_AUDIO_VAE_CONFIG: dict[str, Any] = {
    "encoder_hidden_size": 128,
    "downsampling_ratios": [2, 4, 4, 8, 8],
    "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128,
    "decoder_input_channels": 64,
    "audio_channels": 2,
    "sampling_rate": 44100,
}
# Conditioning of the same file: T5 width 768, cond_dim 768, seconds_start/total in [0, 512].
STABLE_AUDIO_PROJECTION_CONFIG: dict[str, Any] = {
    "text_encoder_dim": 768,
    "conditioning_dim": 768,
    "min_value": 0,
    "max_value": 512,
}
# The prompt conditioner is t5-base (max_length 128): its published config.json.
T5_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "relative_attention_num_buckets": 32,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
T5_MAX_LENGTH = 128

# laion/clap-htsat-fused's config.json: HTSAT-tiny audio tower (patch embeddings 96, depths
# [2, 2, 6, 2], heads [4, 8, 16, 32], window 8, spec 256, 64 mel bins) with fusion enabled and a
# RoBERTa-base text tower; both project to 512. Transformers' convert_clap_original_pytorch_to_hf.py
# builds it from ClapConfig defaults plus enable_fusion, which is what is spelled out here.
CLAP_HTSAT_FUSED_CONFIG: dict[str, Any] = {
    "audio_config": {
        "window_size": 8,
        "num_mel_bins": 64,
        "spec_size": 256,
        "patch_size": 4,
        "patch_stride": [4, 4],
        "num_classes": 527,
        "hidden_size": 768,
        "projection_dim": 512,
        "depths": [2, 2, 6, 2],
        "num_attention_heads": [4, 8, 16, 32],
        "enable_fusion": True,
        "fusion_type": None,
        "patch_embeds_hidden_size": 96,
        "flatten_patch_embeds": True,
        "enable_patch_layer_norm": True,
        "mlp_ratio": 4.0,
        "aff_block_r": 4,
        "projection_hidden_act": "relu",
        "layer_norm_eps": 1e-5,
    },
    "text_config": {
        "vocab_size": 50265,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-12,
        "projection_dim": 512,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "projection_hidden_act": "relu",
    },
    "projection_dim": 512,
    "logit_scale_init_value": 1 / 0.07,
}
# Its preprocessor_config.json (note frequency_min 50, where ClapFeatureExtractor defaults to 0).
CLAP_FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    "feature_size": 64,
    "sampling_rate": 48000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "frequency_min": 50,
    "frequency_max": 14000,
    "padding": "repeatpad",
    "truncation": "fusion",
    "top_db": None,
}

# MIT/ast-finetuned-audioset-10-10-0.4593: ASTConfig defaults (patch 16, strides 10 x 10,
# 1024 frames x 128 mel bins, 12 x 768) with the 527 AudioSet labels, as in transformers'
# convert_audio_spectrogram_transformer_original_to_pytorch.py for "10-10".
AST_AUDIOSET_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "patch_size": 16,
    "frequency_stride": 10,
    "time_stride": 10,
    "max_length": 1024,
    "num_mel_bins": 128,
    "qkv_bias": True,
    "layer_norm_eps": 1e-12,
    "num_labels": 527,
}
# Its preprocessor_config.json: 16 kHz Kaldi fbank, AudioSet normalisation statistics.
AST_FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    "feature_size": 1,
    "sampling_rate": 16000,
    "num_mel_bins": 128,
    "max_length": 1024,
    "do_normalize": True,
    "mean": -4.2677393,
    "std": 4.5689974,
}


def build_paper_architecture(role: str) -> dict:
    """The paper checkpoint of `role` at full size with random weights (nothing downloaded).

    lm: config, mlm (BertForMaskedLM), token_classifier (2 labels).  roberta: config, mlm (RobertaForMaskedLM).
    generator: transformer, vae, text_encoder (T5-base encoder), projection_model, tokenizer_max_length.
    clap: model (ClapModel), feature_extractor.  audio_encoder: model (ASTModel), feature_extractor.
    Modules are in eval mode, as `from_pretrained` returns them. Tokenizers are not included:
    their vocabularies come only with the checkpoints.
    """
    require(role in ROLES, "role", f"be one of {ROLES}", role)
    parts = _build_paper_parts(role)
    for part in parts.values():
        if hasattr(part, "eval"):
            part.eval()
    return parts


def _build_paper_parts(role: str) -> dict:
    if role == "lm":
        config = BertConfig(**BERT_BASE_CONFIG)
        return {
            "config": config,
            "mlm": BertForMaskedLM(config),
            "token_classifier": BertForTokenClassification(BertConfig(**BERT_BASE_CONFIG, num_labels=2)),
        }
    if role == "roberta":
        config = RobertaConfig(**ROBERTA_BASE_CONFIG)
        return {"config": config, "mlm": RobertaForMaskedLM(config)}
    if role == "generator":
        return {
            "transformer": StableAudioDiTModel(**STABLE_AUDIO_DIT_CONFIG),
            "vae": AutoencoderOobleck(**STABLE_AUDIO_VAE_CONFIG),
            "text_encoder": T5EncoderModel(T5Config(**T5_BASE_CONFIG)),
            "projection_model": StableAudioProjectionModel(**STABLE_AUDIO_PROJECTION_CONFIG),
            "tokenizer_max_length": T5_MAX_LENGTH,
        }
    if role == "clap":
        return {
            "model": ClapModel(ClapConfig(**CLAP_HTSAT_FUSED_CONFIG)),
            "feature_extractor": ClapFeatureExtractor(**CLAP_FEATURE_EXTRACTOR_CONFIG),
        }
    return {
        "model": ASTModel(ASTConfig(**AST_AUDIOSET_CONFIG)),
        "feature_extractor": ASTFeatureExtractor(**AST_FEATURE_EXTRACTOR_CONFIG),
    }
