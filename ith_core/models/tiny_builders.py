"""Builders of the `tiny` model profile: random-weight models with the real classes and formats.

Each builder trains its tokenizer on the given corpus with the `tokenizers` library, builds the
model from a config object under a fixed seed and writes the folder with `save_pretrained`, so
it loads through `from_pretrained` exactly like the paper checkpoint of the same role.
`ith_core.models.profiles.ensure_tiny_profile` decides where and when to build; this module only builds.

Shapes follow the paper checkpoints where shapes reach other stages (sample rates and channel
counts, Stable Audio's hop of 2048 samples, CLAP's fused 10 s input, AST's patch geometry)
and are tiny everywhere else (widths, depths, vocabularies), so all four roles build in seconds
on a CPU. The tokenizers are trained reproducibly: the same corpus gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    AutoencoderOobleck,
    DDIMScheduler,
    EDMDPMSolverMultistepScheduler,
    StableAudioDiTModel,
    StableAudioPipeline,
)
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaTokenizerFast,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from ith_core.models.quiet_loading import expected_load_noise

# Bump when a builder changes in a way the settings below do not capture: the profile hash
# covers this, so every cached tiny profile is rebuilt.
TINY_RECIPE_VERSION = 3

# Words the pitch task scores as single tokens at the [MASK] (argmax over these two ids).
REQUIRED_LM_WORDS = ("higher", "lower")

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# T5's ids: <pad> 0 (also the decoder start), </s> 1, <unk> 2.
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
# RoBERTa's ids for the first four (ClapTextConfig defaults: bos 0, pad 1, eos 2).
CLAP_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# Every setting that changes a tiny model; all of it enters the profile hash.
TINY_RECIPE: dict[str, Any] = {
    "version": TINY_RECIPE_VERSION,
    "seed": 20250321,
    "lm": {
        "vocab_size": 3000,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "model_max_length": 512,
    },
    # The `roberta` role (the published table's RoBERTa-base row): cased byte-level BPE.
    "roberta": {
        "bpe_vocab_size": 3000,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 514,
        "model_max_length": 512,
    },
    "generator": {
        "t5_vocab_size": 1000,
        "t5": {
            "d_model": 16,
            "d_kv": 8,
            "d_ff": 32,
            "num_layers": 2,
            "num_heads": 2,
            "relative_attention_num_buckets": 8,
        },
        # The paper's T5 tokenizer truncates prompts at 128 tokens.
        "model_max_length": 128,
        # 44.1 kHz stereo, a hop of 2048 and the DiT window (sample_size 1024 latent frames,
        # 47.55 s) as in stable-audio-open-1.0, so "full" latents cost what they cost there:
        # denoising the whole window to keep 5 s (version 1 had 128 frames, 5.94 s).
        "vae": {
            "encoder_hidden_size": 8,
            "downsampling_ratios": [2, 4, 4, 8, 8],
            "channel_multiples": [1, 2, 4, 8, 8],
            "decoder_channels": 8,
            "decoder_input_channels": 4,
            "audio_channels": 2,
            "sampling_rate": 44100,
        },
        "projection": {"conditioning_dim": 8, "min_value": 0, "max_value": 512},
        "transformer": {
            "sample_size": 1024,
            "num_layers": 2,
            "attention_head_dim": 8,
            "num_attention_heads": 2,
            "time_proj_dim": 8,
        },
        # The checkpoint's sigma range and schedule; its own CosineDPMSolverMultistepScheduler
        # needs torchsde, which the pipeline does not depend on.
        "scheduler": {
            "sigma_min": 0.3,
            "sigma_max": 500.0,
            "sigma_data": 1.0,
            "sigma_schedule": "exponential",
            "prediction_type": "v_prediction",
            "solver_order": 2,
            "algorithm_type": "sde-dpmsolver++",
        },
    },
    "clap": {
        "bpe_vocab_size": 1000,
        "text": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 514,
        },
        # Fusion on, as in laion/clap-htsat-fused. 10 s at hop 480 is 1001 frames, which must
        # stay at or below spec_size**2 / num_mel_bins (1024 here).
        "audio": {
            "num_mel_bins": 16,
            "spec_size": 128,
            "window_size": 4,
            "patch_size": 4,
            "patch_stride": [4, 4],
            "patch_embeds_hidden_size": 16,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "hidden_size": 32,
            "enable_fusion": True,
        },
        "projection_dim": 16,
        "feature_extractor": {
            "feature_size": 16,
            "sampling_rate": 48000,
            "hop_length": 480,
            "max_length_s": 10,
            "fft_window_size": 1024,
            "frequency_min": 50,
            "frequency_max": 14000,
            "padding": "repeatpad",
            "truncation": "fusion",
        },
        "model_max_length": 512,
    },
    "audio_encoder": {
        # Patch geometry, mel bins and normalisation as in MIT/ast-finetuned-audioset-10-10-0.4593;
        # width and depth are tiny, and the input window is 128 frames (1.28 s: 12 frequency x
        # 12 time patches + 2 = 146 tokens) instead of 1024 (10.24 s, 1214 tokens): the method
        # trains AST end to end, and the tiny profile's clips are 1 s, so a full window would
        # cost 8x per training step for padding alone.
        "model": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "patch_size": 16,
            "frequency_stride": 10,
            "time_stride": 10,
            "max_length": 128,
            "num_mel_bins": 128,
        },
        "num_labels": 8,
        "feature_extractor": {
            "feature_size": 1,
            "sampling_rate": 16000,
            "num_mel_bins": 128,
            "max_length": 128,
            "do_normalize": True,
            "mean": -4.2677393,
            "std": 4.5689974,
        },
    },
}

# The tiny AudioLDM2 (`imagine.generator=audioldm2`), built only when a run asks for it, into its own
# folder (`profiles.ensure_tiny_audioldm2`): a recipe apart from TINY_RECIPE, so adding it left every
# tiny profile's hash, and so every stage key and audio id of the other generators, as it was.
# Shapes that reach other stages are cvssp/audioldm2's: 16 kHz mono out of a HiFi-GAN of hop 160
# (100 mel frames per second, 64 mel bins), a VAE of scale 4 with 8 latent channels, the UNet's
# window of 256 latent frames (10.24 s, so "full" latents cost what they cost there) and its two
# cross-attentions (GPT-2's 8 generated states, T5's states) in every attention block; widths,
# depths and vocabularies are tiny.
TINY_AUDIOLDM2_VERSION = 1
TINY_AUDIOLDM2_RECIPE: dict[str, Any] = {
    "version": TINY_AUDIOLDM2_VERSION,
    "seed": 20251207,
    "clap_bpe_vocab_size": 1000,
    "t5_vocab_size": 1000,
    # cvssp/audioldm2's tokenizers: RoBERTa's 512 positions, T5 truncated at 128 tokens.
    "clap_model_max_length": 512,
    "t5_model_max_length": 128,
    "clap_text": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 514,
    },
    # laion/clap-htsat-unfused's layout (no fusion), tiny; only its text tower conditions the UNet.
    "clap_audio": {
        "num_mel_bins": 16,
        "spec_size": 64,
        "window_size": 4,
        "patch_size": 2,
        "patch_stride": [2, 2],
        "patch_embeds_hidden_size": 16,
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "hidden_size": 32,
        "enable_fusion": False,
    },
    "clap_projection_dim": 16,
    "feature_extractor": {
        "feature_size": 16,
        "sampling_rate": 48000,
        "hop_length": 480,
        "max_length_s": 10,
        "fft_window_size": 1024,
        "frequency_min": 50,
        "frequency_max": 14000,
        "padding": "repeatpad",
        "truncation": "rand_trunc",
    },
    "t5": {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 2, "num_heads": 2, "relative_attention_num_buckets": 8},
    "gpt2": {
        "n_embd": 16,
        "n_layer": 2,
        "n_head": 2,
        "n_positions": 256,
        "vocab_size": 16,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "max_new_tokens": 8,
    "unet": {
        "sample_size": 256,
        "in_channels": 8,
        "out_channels": 8,
        "block_out_channels": [8, 16, 16, 16],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 2,
        "norm_num_groups": 4,
    },
    "vae": {
        "in_channels": 1,
        "out_channels": 1,
        "latent_channels": 8,
        "block_out_channels": [8, 16, 16],
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 1024,
        "scaling_factor": 0.4110932946205139,
    },
    "vocoder": {
        "model_in_dim": 64,
        "sampling_rate": 16000,
        "upsample_initial_channel": 32,
        "upsample_rates": [5, 4, 2, 2, 2],
        "upsample_kernel_sizes": [16, 16, 8, 4, 4],
        "resblock_kernel_sizes": [3, 7],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "normalize_before": False,
        # Random weights at the checkpoint's 0.01 give audio near 1e-9 through six upsampling layers,
        # stored as silence (GeneratedAudioError); at 0.2 the tiny vocoder's output is audible, below tanh's clip.
        "initializer_range": 0.2,
    },
    # cvssp/audioldm2's scheduler_config.json.
    "scheduler": {
        "beta_start": 0.0015,
        "beta_end": 0.0195,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    },
}

# Offsets of each role's seed from TINY_RECIPE["seed"], so roles do not share random streams.
_ROLE_SEED_OFFSET = {"lm": 0, "generator": 1, "clap": 2, "audio_encoder": 3, "roberta": 4}


@contextlib.contextmanager
def _seeded(role: str):
    # A private random stream: the same recipe gives the same weights, and the caller's global
    # torch RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_RECIPE["seed"] + _ROLE_SEED_OFFSET[role])
        yield


def train_bert_tokenizer(corpus: Sequence[str], vocab_size: int, model_max_length: int):
    """Uncased WordPiece (BERT normalizer and pre-tokenizer) in which REQUIRED_LM_WORDS are whole tokens."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainee = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainee.normalizer = normalizer
    trainee.pre_tokenizer = pre_tokenizer
    # The trainer gives "##x" pieces ids in hash-map order, and ids break ties between equally
    # frequent merges, so the vocabulary changes from run to run (tokenizers issue #1794).
    # Declaring every "##x" up front, in sorted order, fixes their ids and makes training
    # reproducible; they are declared as special tokens only for training (see below).
    chars = sorted({c for text in corpus for c in normalizer.normalize_str(text) if not c.isspace()})
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=[*BERT_SPECIAL_TOKENS, *(f"##{c}" for c in chars)],
        show_progress=False,
    )
    trainee.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    vocab = json.loads(trainee.to_str())["model"]["vocab"]

    # A corpus without these words (the animal task alone: its sentences hold [MASK], not the
    # answers) splits them into pieces and breaks the pitch head; appending keeps trained ids.
    for word in REQUIRED_LM_WORDS:
        if word not in vocab:
            vocab[word] = len(vocab)
    # A fresh tokenizer over the trained vocabulary, so the "##x" pieces are ordinary tokens.
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100)
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    wrapped = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=model_max_length,
    )
    for word in REQUIRED_LM_WORDS:
        pieces = wrapped.tokenize(word)
        if pieces != [word]:
            raise RuntimeError(f"tiny BERT tokenizer splits {word!r} into {pieces}; the pitch task needs one token")
    return wrapped


def train_t5_tokenizer(corpus: Sequence[str], vocab_size: int, model_max_length: int):
    """Unigram model with NFKC and Metaspace, T5's special tokens and ids, no sentinel tokens.

    The pieces come from BPE training and their log-probabilities from how often the BPE
    segmentation of the corpus uses them. `UnigramTrainer` is not used because its EM sums
    floats in hash-map order: scores, piece order and hence ids differ from run to run.
    """
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(T5_SPECIAL_TOKENS), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer, length=len(corpus))

    counts: Counter[str] = Counter()
    for encoding in bpe.encode_batch(list(corpus), add_special_tokens=False):
        counts.update(encoding.tokens)
    id_to_piece = {i: p for p, i in bpe.get_vocab(with_added_tokens=False).items()}
    pieces = [id_to_piece[i] for i in sorted(id_to_piece) if id_to_piece[i] not in T5_SPECIAL_TOKENS]
    # Add-one smoothing keeps pieces the segmentation never picks (merge intermediates) usable.
    total = sum(counts[p] + 1 for p in pieces)
    scored = [(p, math.log((counts[p] + 1) / total)) for p in pieces]
    tok = Tokenizer(
        models.Unigram(
            [(t, 0.0) for t in T5_SPECIAL_TOKENS] + scored, unk_id=T5_SPECIAL_TOKENS.index("<unk>"), byte_fallback=False
        )
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>",
        pair="$A </s> $B </s>",
        special_tokens=[("</s>", T5_SPECIAL_TOKENS.index("</s>"))],
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def train_clap_tokenizer(corpus: Sequence[str], vocab_size: int, model_max_length: int):
    """Byte-level BPE with RoBERTa's special tokens and post-processing."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CLAP_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")),
        ("<s>", tok.token_to_id("<s>")),
        trim_offsets=True,
        add_prefix_space=False,
    )
    return RobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    )


def train_roberta_tokenizer(corpus: Sequence[str], vocab_size: int, model_max_length: int):
    """Cased byte-level BPE with RoBERTa's special tokens, in which " higher" and " lower" (as they
    follow a space in a sentence) are single tokens: the pitch head scores those two ids."""
    # Each word after a space (as in a sentence), often enough for BPE to merge it whole.
    required = ["it is " + " or ".join(REQUIRED_LM_WORDS)] * 100
    tokenizer = train_clap_tokenizer(list(corpus) + required, vocab_size, model_max_length)
    for word in REQUIRED_LM_WORDS:
        pieces = tokenizer.tokenize(" " + word)
        if len(pieces) != 1:
            raise RuntimeError(f"tiny RoBERTa tokenizer splits ' {word}' into {pieces}; the pitch task needs one token")
    return tokenizer


def build_roberta(corpus: Sequence[str], out_dir: Path) -> None:
    recipe = TINY_RECIPE["roberta"]
    tokenizer = train_roberta_tokenizer(corpus, recipe["bpe_vocab_size"], recipe["model_max_length"])
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe["hidden_size"],
        num_hidden_layers=recipe["num_hidden_layers"],
        num_attention_heads=recipe["num_attention_heads"],
        intermediate_size=recipe["intermediate_size"],
        max_position_embeddings=recipe["max_position_embeddings"],
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with _seeded("roberta"):
        model = RobertaForMaskedLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_lm(corpus: Sequence[str], out_dir: Path) -> None:
    recipe = TINY_RECIPE["lm"]
    tokenizer = train_bert_tokenizer(corpus, recipe["vocab_size"], recipe["model_max_length"])
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe["hidden_size"],
        num_hidden_layers=recipe["num_hidden_layers"],
        num_attention_heads=recipe["num_attention_heads"],
        intermediate_size=recipe["intermediate_size"],
        max_position_embeddings=recipe["max_position_embeddings"],
        pad_token_id=tokenizer.pad_token_id,
    )
    with _seeded("lm"):
        model = BertForMaskedLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_generator(corpus: Sequence[str], out_dir: Path) -> None:
    recipe = TINY_RECIPE["generator"]
    tokenizer = train_t5_tokenizer(corpus, recipe["t5_vocab_size"], recipe["model_max_length"])
    t5 = recipe["t5"]
    cond_dim = recipe["projection"]["conditioning_dim"]
    dit = recipe["transformer"]
    latent_channels = recipe["vae"]["decoder_input_channels"]
    with _seeded("generator"):
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
                **t5,
            )
        )
        with warnings.catch_warnings():
            # Oobleck's convolutions use torch.nn.utils.weight_norm, deprecated by torch (see load_generator).
            warnings.filterwarnings(
                "ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated", category=FutureWarning
            )
            vae = AutoencoderOobleck(**recipe["vae"])
        projection_model = StableAudioProjectionModel(text_encoder_dim=t5["d_model"], **recipe["projection"])
        # The relations between these sizes are the checkpoint's (diffusers' convert_stable_audio.py):
        # cross-attention width = conditioning width, global input = 2 x conditioning width,
        # key/value heads = conditioning width / head width.
        transformer = StableAudioDiTModel(
            in_channels=latent_channels,
            out_channels=latent_channels,
            cross_attention_dim=cond_dim,
            cross_attention_input_dim=cond_dim,
            global_states_input_dim=2 * cond_dim,
            num_key_value_attention_heads=cond_dim // dit["attention_head_dim"],
            **dit,
        )
    scheduler = EDMDPMSolverMultistepScheduler(**recipe["scheduler"])
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection_model,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(out_dir)


def build_clap(corpus: Sequence[str], out_dir: Path) -> None:
    recipe = TINY_RECIPE["clap"]
    tokenizer = train_clap_tokenizer(corpus, recipe["bpe_vocab_size"], recipe["model_max_length"])
    projection_dim = recipe["projection_dim"]
    text_config = dict(
        recipe["text"],
        vocab_size=len(tokenizer),
        projection_dim=projection_dim,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    audio_config = dict(copy.deepcopy(recipe["audio"]), projection_dim=projection_dim)
    config = ClapConfig(text_config=text_config, audio_config=audio_config, projection_dim=projection_dim)
    with _seeded("clap"):
        model = ClapModel(config)
    model.save_pretrained(out_dir)
    # Saved piecewise, as laion/clap-htsat-fused is laid out (preprocessor_config.json beside the
    # tokenizer files), not as transformers 5 saves a ClapProcessor (processor_config.json).
    ClapFeatureExtractor(**recipe["feature_extractor"]).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_audio_encoder(corpus: Sequence[str], out_dir: Path) -> None:
    del corpus  # AST has no tokenizer
    recipe = TINY_RECIPE["audio_encoder"]
    labels = {i: f"label_{i}" for i in range(recipe["num_labels"])}
    config = ASTConfig(**recipe["model"], id2label=labels, label2id={v: k for k, v in labels.items()})
    # Saved with the classification head, as the AudioSet checkpoint is; ASTModel loads the encoder.
    with _seeded("audio_encoder"):
        model = ASTForAudioClassification(config)
    model.save_pretrained(out_dir)
    with expected_load_noise():
        ASTFeatureExtractor(**recipe["feature_extractor"]).save_pretrained(out_dir)


def build_audioldm2(corpus: Sequence[str], out_dir: Path) -> None:
    """A tiny `AudioLDM2Pipeline` (TINY_AUDIOLDM2_RECIPE): CLAP and T5 tokenizers trained on `corpus`."""
    recipe = TINY_AUDIOLDM2_RECIPE
    tokenizer = train_clap_tokenizer(corpus, recipe["clap_bpe_vocab_size"], recipe["clap_model_max_length"])
    tokenizer_2 = train_t5_tokenizer(corpus, recipe["t5_vocab_size"], recipe["t5_model_max_length"])
    projection_dim = recipe["clap_projection_dim"]
    t5, gpt2 = recipe["t5"], recipe["gpt2"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        text_encoder = ClapModel(
            ClapConfig(
                text_config=dict(
                    recipe["clap_text"],
                    vocab_size=len(tokenizer),
                    projection_dim=projection_dim,
                    pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                ),
                audio_config=dict(copy.deepcopy(recipe["clap_audio"]), projection_dim=projection_dim),
                projection_dim=projection_dim,
            )
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
                **t5,
            )
        )
        language_model = GPT2Model(GPT2Config(**gpt2))
        # The pipeline reads the number of generated states from the language model's config.
        language_model.config.max_new_tokens = recipe["max_new_tokens"]
        projection_model = AudioLDM2ProjectionModel(
            text_encoder_dim=projection_dim, text_encoder_1_dim=t5["d_model"], langauge_model_dim=gpt2["n_embd"]
        )
        unet_recipe = recipe["unet"]
        unet = AudioLDM2UNet2DConditionModel(
            # Per block: self-attention, then cross-attention to GPT-2's states and to T5's, as in
            # cvssp/audioldm2's [[null, 768, 1024], ...].
            cross_attention_dim=[[None, gpt2["n_embd"], t5["d_model"]]] * len(unet_recipe["block_out_channels"]),
            **unet_recipe,
        )
        vae = AutoencoderKL(**recipe["vae"])
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**recipe["vocoder"]))
    pipe = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=ClapFeatureExtractor(**recipe["feature_extractor"]),
        unet=unet,
        scheduler=DDIMScheduler(**recipe["scheduler"]),
        vocoder=vocoder,
    )
    pipe.save_pretrained(out_dir)


BUILDERS = {
    "lm": build_lm,
    "roberta": build_roberta,
    "generator": build_generator,
    "clap": build_clap,
    "audio_encoder": build_audio_encoder,
}
