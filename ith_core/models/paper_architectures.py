"""The paper's checkpoints at full size with random weights, built offline from their published configs.

`build_paper_architecture(role)` gives the modules of one role (`profiles.ROLES`) for shape and
memory checks without a download; the `*_CONFIG` dicts spell out each checkpoint's config.json
(or the stable-audio-tools model_config.json it was converted from).

    from ith_core.models.paper_architectures import build_paper_architecture
    parts = build_paper_architecture("audio_encoder")   # {"model": ASTModel, "feature_extractor": ...}
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    AutoencoderOobleck,
    DDIMScheduler,
    StableAudioDiTModel,
)
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
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForMaskedLM,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
)

from ith_core.config import require
from ith_core.models.profiles import PAPER_CHECKPOINTS

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


# cvssp/audioldm2 (imagine.generator=audioldm2), each component's config.json as published in the
# repository (commit c8e7e189). UNet: 4 blocks of 128/256/384/640 channels, 8 latent channels, a
# window of 256 latent frames (10.24 s), self-attention plus cross-attention to GPT-2's 768-wide
# generated states and to Flan-T5-large's 1024-wide states in each attention block.
AUDIOLDM2_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 256,
    "in_channels": 8,
    "out_channels": 8,
    "block_out_channels": [128, 256, 384, 640],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": [[None, 768, 1024]] * 4,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "transformer_layers_per_block": 1,
}
# Its VAE: a mel-spectrogram autoencoder, 3 blocks (scale 4), 8 latent channels, learned scale.
AUDIOLDM2_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 8,
    "block_out_channels": [128, 256, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.4110932946205139,
    "force_upcast": True,
}
# Its HiFi-GAN vocoder: 64 mel bins to 16 kHz, hop 5*4*2*2*2 = 160 samples.
AUDIOLDM2_VOCODER_CONFIG: dict[str, Any] = {
    "model_in_dim": 64,
    "sampling_rate": 16000,
    "upsample_initial_channel": 1024,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "initializer_range": 0.01,
    "leaky_relu_slope": 0.1,
    "normalize_before": False,
}
# Its text_encoder: laion/clap-htsat-unfused's layout (HTSAT-base audio tower: depths [2, 2, 12, 2],
# width 1024, patch embeddings 128; RoBERTa-base text tower), both projected to 512.
AUDIOLDM2_CLAP_CONFIG: dict[str, Any] = {
    "audio_config": {
        "depths": [2, 2, 12, 2],
        "hidden_size": 1024,
        "patch_embeds_hidden_size": 128,
        "projection_hidden_size": 768,
        "fusion_num_hidden_layers": 2,
        "enable_fusion": False,
    },
    "text_config": {"projection_hidden_size": 768, "fusion_hidden_size": 768, "fusion_num_hidden_layers": 2},
    "projection_dim": 512,
    "projection_hidden_act": "relu",
    "logit_scale_init_value": 14.285714285714285,
}
# Its text_encoder_2: the encoder of google/flan-t5-large; its tokenizer truncates at 128 tokens.
AUDIOLDM2_T5_CONFIG: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 1024,
    "d_kv": 64,
    "d_ff": 2816,
    "num_layers": 24,
    "num_heads": 16,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
# Its language_model: GPT-2 base (12 x 768, 12 heads, 1024 positions), 8 generated states.
AUDIOLDM2_GPT2_CONFIG: dict[str, Any] = {
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_positions": 1024,
    "vocab_size": 50257,
    "activation_function": "gelu_new",
    "bos_token_id": 50256,
    "eos_token_id": 50256,
}
AUDIOLDM2_MAX_NEW_TOKENS = 8
AUDIOLDM2_PROJECTION_CONFIG: dict[str, Any] = {
    "text_encoder_dim": 512,
    "text_encoder_1_dim": 1024,
    "langauge_model_dim": 768,
}
AUDIOLDM2_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
AUDIOLDM2_T5_MAX_LENGTH = 128


def build_paper_architecture(role: str) -> dict:
    """The paper checkpoint of `role` at full size with random weights (nothing downloaded).

    lm: config, mlm (BertForMaskedLM), token_classifier (2 labels).  roberta: config, mlm (RobertaForMaskedLM).
    generator: transformer, vae, text_encoder (T5-base encoder), projection_model, tokenizer_max_length.
    audioldm2 (cvssp/audioldm2, the generator of imagine.generator=audioldm2): unet, vae, vocoder,
    text_encoder (ClapModel), text_encoder_2 (Flan-T5-large encoder), language_model (GPT-2, as the
    loader loads it: GPT2LMHeadModel), projection_model, scheduler, tokenizer_2_max_length.
    clap: model (ClapModel), feature_extractor.  audio_encoder: model (ASTModel), feature_extractor.
    Modules are in eval mode, as `from_pretrained` returns them. Tokenizers are not included:
    their vocabularies come only with the checkpoints.
    """
    require(role in PAPER_CHECKPOINTS, "role", f"be one of {tuple(PAPER_CHECKPOINTS)}", role)
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
    if role == "audioldm2":
        language_model = GPT2LMHeadModel(GPT2Config(**AUDIOLDM2_GPT2_CONFIG))
        language_model.config.max_new_tokens = AUDIOLDM2_MAX_NEW_TOKENS
        return {
            "unet": AudioLDM2UNet2DConditionModel(**AUDIOLDM2_UNET_CONFIG),
            "vae": AutoencoderKL(**AUDIOLDM2_VAE_CONFIG),
            "vocoder": SpeechT5HifiGan(SpeechT5HifiGanConfig(**AUDIOLDM2_VOCODER_CONFIG)),
            "text_encoder": ClapModel(ClapConfig(**AUDIOLDM2_CLAP_CONFIG)),
            "text_encoder_2": T5EncoderModel(T5Config(**AUDIOLDM2_T5_CONFIG)),
            "language_model": language_model,
            "projection_model": AudioLDM2ProjectionModel(**AUDIOLDM2_PROJECTION_CONFIG),
            "scheduler": DDIMScheduler(**AUDIOLDM2_SCHEDULER_CONFIG),
            "tokenizer_2_max_length": AUDIOLDM2_T5_MAX_LENGTH,
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
