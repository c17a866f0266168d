"""Fusion layer and FusionLM: the gate, masks, untouched spans, hook sites, BERT and RoBERTa."""

from __future__ import annotations

import pytest
import torch

from ith_core.fusion.lm_inputs import FusionCollator, SpanAudio, encode_examples
from ith_core.fusion.model import FusionLayer, FusionLM

SENT = "The sound of a barking dog is [MASK] than the sound of a tiny bird."
SHORT = "A [MASK] says woof."


class DictFeatures:
    def __init__(self, table: dict[str, torch.Tensor]):
        self.table = table

    def get(self, audio_id: str) -> torch.Tensor:
        return self.table[audio_id]


def _span(sentence: str, text: str, audio_id: str, index: int = 0) -> SpanAudio:
    start = sentence.index(text)
    return SpanAudio(index, text, start, start + len(text), audio_id)


@pytest.fixture(scope="module")
def bert(tiny_models):
    from ith_core.models.profiles import load_lm

    return load_lm(tiny_models["lm"])


@pytest.fixture(scope="module")
def roberta(train_corpus):
    """A tiny RoBERTa built from config with a locally trained byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = train_corpus[:3000] + ["it is higher or lower than that"] * 200
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=1200,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    wrapped = RobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=len(wrapped),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    return RobertaForMaskedLM(cfg), wrapped


def _model(mlm, fusion_layer=-1, audio_dim=12, seed=1):
    torch.manual_seed(seed)
    heads = mlm.config.num_attention_heads
    m = FusionLM(mlm, audio_dim=audio_dim, num_heads=heads, ffn_dim=48, dropout=0.1, fusion_layer=fusion_layer)
    return m.eval()


def _batch(tokenizer, rows, spans, features, use_audio=True):
    items, counts = encode_examples(tokenizer, rows, spans, max_length=64, use_audio=use_audio)
    return items, FusionCollator(tokenizer.pad_token_id, features if use_audio else None)(items), counts


def _rows():
    return [
        {"example_id": "p/1", "task": "pitch", "split": "dev", "sentence": SENT, "answer": "higher"},
        {"example_id": "a/1", "task": "animal", "split": "dev", "sentence": SHORT, "answer": "dog"},
    ]


def _features(dim=12, lengths=(5, 7)):
    g = torch.Generator().manual_seed(3)
    return DictFeatures({f"aud{i}": torch.randn(n, dim, generator=g) for i, n in enumerate(lengths)})


def test_fusion_layer_is_the_gated_mixture():
    torch.manual_seed(0)
    layer = FusionLayer(16, 4, 32, 0.0).eval()
    text, audio = torch.randn(3, 4, 16), torch.randn(3, 6, 16)
    mask = torch.ones(3, 6, dtype=torch.bool)
    out = layer(text, audio, mask)
    g = layer.gate(text, audio, mask)
    attended, _ = layer.attn(text, audio, audio, need_weights=False)
    o1 = layer.norm1(text + attended)
    h_a = layer.norm2(o1 + layer.ffn(o1))
    torch.testing.assert_close(out, g * h_a + (1 - g) * text)
    # Gate closed: the text states pass through unchanged; gate open: the audio branch alone.
    with torch.no_grad():
        layer.gate_text.bias.fill_(-1e4)
    torch.testing.assert_close(layer(text, audio, mask), text)
    with torch.no_grad():
        layer.gate_text.bias.fill_(1e4)
    torch.testing.assert_close(layer(text, audio, mask), h_a)


def test_fusion_layer_ignores_padded_audio():
    torch.manual_seed(0)
    layer = FusionLayer(16, 4, 32, 0.0).eval()
    text, audio = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    padded = torch.cat([audio, 100 * torch.randn(1, 4, 16)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 4])
    torch.testing.assert_close(layer(text, audio, torch.ones(1, 5, dtype=torch.bool)), layer(text, padded, mask))
    # ... and the mask matters: the same padding unmasked changes the output.
    assert not torch.allclose(layer(text, padded, torch.ones(1, 9, dtype=torch.bool)), layer(text, padded, mask))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_only_span_positions_change_and_padding_is_masked(family, bert, roberta):
    mlm, tokenizer = bert if family == "bert" else roberta
    model = _model(mlm)
    spans = {"p/1": [_span(SENT, "barking dog", "aud0", 0), _span(SENT, "tiny bird", "aud1", 1)]}
    items, batch, counts = _batch(tokenizer, _rows(), spans, _features())
    assert counts == {} and len(items[0].span_positions) == 2 and items[1].span_positions == []
    captured = {}
    site = model.mlm.base_model.embeddings
    handle = site.register_forward_hook(lambda m, a, o: captured.__setitem__(len(captured), o))
    try:
        with torch.no_grad():
            fused_logits = model(**batch).logits
            plain_logits = model.mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        handle.remove()
    # Hooks run in registration order: the capture sees the fused output on the first call.
    fused, plain = captured[0], captured[1]
    changed = (fused - plain).abs().sum(-1) > 1e-6
    expected = torch.zeros_like(changed)
    for s, positions in enumerate(items[0].span_positions):
        expected[0, positions] = True
    assert torch.equal(changed, expected), "fusion must rewrite exactly the span token positions"
    # The example without spans is untouched end to end.
    real = batch["attention_mask"][1].bool()
    torch.testing.assert_close(fused_logits[1][real], plain_logits[1][real])
    # Padding invariance: the pitch example alone gives the same logits as inside the padded batch.
    alone_items, alone, _ = _batch(tokenizer, _rows()[:1], spans, _features())
    with torch.no_grad():
        alone_logits = model(**alone).logits
    n = len(alone_items[0].input_ids)
    torch.testing.assert_close(alone_logits[0, :n], fused_logits[0, :n], atol=1e-5, rtol=1e-4)
    # Context is per call: the next call without spans is the plain LM.
    with torch.no_grad():
        again = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(again, plain_logits)


def test_span_offsets_after_repeated_masks(bert):
    _, tokenizer = bert
    sentence = "A [MASK] makes a loud quacking noise."
    row = {"example_id": "a/2", "task": "animal", "split": "dev", "sentence": sentence, "answer": "duck"}
    spans = {"a/2": [_span(sentence, "loud quacking noise", "aud0")]}
    items, _ = encode_examples(tokenizer, [row], spans, max_length=64)
    item = items[0]
    assert len(item.mask_positions) == len(tokenizer.tokenize("duck"))
    span_tokens = tokenizer.convert_ids_to_tokens([item.input_ids[p] for p in item.span_positions[0]])
    assert tokenizer.convert_tokens_to_string(span_tokens) == "loud quacking noise"


def test_audio_padding_and_shared_audio(bert):
    mlm, tokenizer = bert
    model = _model(mlm)
    feats = _features(lengths=(5, 9))
    rows = [_rows()[0], {**_rows()[0], "example_id": "p/2"}]
    spans = {
        "p/1": [_span(SENT, "barking dog", "aud0")],
        "p/2": [_span(SENT, "barking dog", "aud0"), _span(SENT, "tiny bird", "aud1", 1)],
    }
    _, batch, _ = _batch(tokenizer, rows, spans, feats)
    # Two spans share aud0: it is gathered once; aud0 is padded to aud1's 9 tokens.
    assert batch["audio_tokens"].shape[:2] == (2, 9) and batch["audio_mask"].sum().item() == 14
    _, alone, _ = _batch(tokenizer, rows[:1], spans, feats)
    with torch.no_grad():
        torch.testing.assert_close(model(**alone).logits[0], model(**batch).logits[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_fusion_after_encoder_layer(family, bert, roberta):
    mlm, tokenizer = bert if family == "bert" else roberta
    model = _model(mlm, fusion_layer=0)
    spans = {"p/1": [_span(SENT, "barking dog", "aud0")]}
    _, batch, _ = _batch(tokenizer, _rows()[:1], spans, _features())
    with torch.no_grad():
        fused = model(**batch).logits
        plain = model.mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(fused, plain)
    with pytest.raises(ValueError, match="fusion.fusion_layer"):
        _model(mlm, fusion_layer=5)


def test_gradients_reach_fusion_and_lm(bert):
    mlm, tokenizer = bert
    model = _model(mlm).train()
    spans = {"p/1": [_span(SENT, "barking dog", "aud0")]}
    _, batch, _ = _batch(tokenizer, _rows(), spans, _features())
    model(**batch).loss.backward()
    assert model.fusion.attn.in_proj_weight.grad.abs().sum() > 0
    assert model.projector.net[0].weight.grad.abs().sum() > 0
    model.zero_grad()
    # A batch without spans still touches every fusion parameter (DDP would otherwise hang).
    _, batch, _ = _batch(tokenizer, _rows()[1:], {}, _features())
    model(**batch).loss.backward()
    assert all(p.grad is not None for p in model.parameters_of_fusion())


def test_audio_statistics_standardise_per_position_and_survive_save_load():
    from ith_core.config import ConfigError
    from ith_core.fusion.model import AudioProjector, audio_feature_statistics

    g = torch.Generator().manual_seed(0)
    # A large shared part per position and a small per-clip deviation: the frozen-encoder case.
    shared = 5 * torch.randn(6, 4, generator=g)
    feats = DictFeatures({f"a{i}": (shared + 0.1 * torch.randn(6, 4, generator=g)).half() for i in range(50)})
    mean, std = audio_feature_statistics(feats, list(feats.table))
    assert mean.shape == std.shape == (6, 4)
    z = torch.stack([(feats.get(a).float() - mean) / std for a in feats.table])
    torch.testing.assert_close(z.mean(0), torch.zeros(6, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(6, 4), atol=1e-3, rtol=0)
    # Clips of different lengths: per-channel statistics.
    ragged = DictFeatures({"x": torch.randn(3, 4, generator=g), "y": torch.randn(5, 4, generator=g)})
    assert audio_feature_statistics(ragged, ["x", "y"])[0].shape == (1, 4)

    torch.manual_seed(0)
    proj = AudioProjector(4, 8)
    proj.set_input_statistics(mean, std)
    fresh = AudioProjector(4, 8)
    fresh.load_state_dict(proj.state_dict())  # the statistics' (6, 4) shape comes from the checkpoint
    x = feats.get("a0").float()[None]
    torch.testing.assert_close(fresh(x), proj(x))
    torch.testing.assert_close(proj(x), proj.net((x - mean) / std))
    with pytest.raises(ConfigError, match="audio tokens"):
        proj(torch.randn(1, 5, 4))
    # A checkpoint from before the statistics existed loads as the identity it was trained with.
    old = {k: v for k, v in proj.state_dict().items() if not k.startswith("input_")}
    legacy = AudioProjector(4, 8)
    legacy.load_state_dict(old)
    torch.testing.assert_close(legacy(x), proj.net(x))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_mask_past_max_length_is_windowed_and_scored(family, bert, roberta):
    """A [MASK] beyond max_length is scored on a window around it; span positions stay on the span."""
    _, tokenizer = bert if family == "bert" else roberta
    filler = " ".join(["the dog barks and the bird sings"] * 12)  # far more than 32 tokens
    sentence = f"{filler}. A loud quacking noise is what a [MASK] makes, said {filler}."
    rows = [
        {
            "example_id": "a/long",
            "task": "animal",
            "split": "test",
            "sentence": sentence,
            "answer": "duck",
            "options": ["duck", "cat", "cow", "hippopotamus"],
        },
        {
            "example_id": "p/long",
            "task": "pitch",
            "split": "test",
            "answer": "higher",
            "sentence": f"{filler}. A loud quacking noise is [MASK] than {filler}.",
        },
    ]
    near = _span(sentence, "loud quacking noise", "aud0")
    far = SpanAudio(1, "the dog", 0, len("the dog"), "aud1")  # the sentence's first words: outside the window
    spans = {"a/long": [near, far], "p/long": [_span(rows[1]["sentence"], "loud quacking noise", "aud0")]}
    assert len(tokenizer(sentence)["input_ids"]) > 100
    items, counts = encode_examples(tokenizer, rows, spans, max_length=32, mc=True)
    gold = {i.example_id: i for i in items if i.variant == "gold"}
    assert set(gold) == {"a/long", "p/long"}  # every row scored
    assert counts["windowed"] == 2 and counts["span_outside_window"] == 1
    assert not counts.get("masks_exceed_max_length") and not counts.get("mc_variant_dropped")
    for item in items:
        assert item.windowed and len(item.input_ids) == 32
        assert item.input_ids[0] == tokenizer.cls_token_id and item.input_ids[-1] == tokenizer.sep_token_id
        assert all(item.input_ids[p] == tokenizer.mask_token_id for p in item.mask_positions)
        assert sum(t == tokenizer.mask_token_id for t in item.input_ids) == len(item.mask_positions)
    animal = gold["a/long"]
    assert [animal.labels[p] for p in animal.mask_positions] == animal.target_ids
    assert animal.span_texts == ["loud quacking noise"] and animal.span_audio_ids == ["aud0"]
    for item in gold.values():
        span_tokens = tokenizer.convert_ids_to_tokens([item.input_ids[p] for p in item.span_positions[0]])
        assert tokenizer.convert_tokens_to_string(span_tokens).strip() == "loud quacking noise"
    # A sentence that fits is not windowed and encodes as before (special tokens around it).
    short, short_counts = encode_examples(tokenizer, [{**rows[0], "sentence": SHORT}], {}, max_length=32)
    assert not short[0].windowed and "windowed" not in short_counts
    assert (
        short[0].input_ids
        == tokenizer(SHORT.replace("[MASK]", " ".join([tokenizer.mask_token] * len(short[0].mask_positions))))[
            "input_ids"
        ]
    )
    # Only masks that alone exceed max_length leave a row unscored, and they are counted.
    _, tight = encode_examples(tokenizer, [{**rows[0], "answer": "hippopotamus " * 12}], {}, max_length=8)
    assert tight["masks_exceed_max_length"] == 1


def test_trained_encoder_statistics_and_learning_rate_groups(bert):
    """`fusion.standardize_audio` with a trained encoder takes its statistics from the encoder's
    own tokens (eval mode, mode restored); `fusion.audio_encoder_lr_scale` puts exactly the
    encoder's weights in a second optimiser group at the scaled rate."""
    from transformers import ASTConfig, ASTModel

    from ith_core.config import FusionConfig
    from ith_core.fusion.model import EncodedTokens, audio_feature_statistics
    from ith_core.fusion.training import TrainJob, parameter_groups

    mlm, _ = bert
    torch.manual_seed(0)
    ast = ASTModel(
        ASTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            patch_size=16,
            frequency_stride=10,
            time_stride=10,
            max_length=32,
            num_mel_bins=32,
            hidden_dropout_prob=0.5,
        )
    )
    model = FusionLM(
        mlm,
        audio_dim=16,
        num_heads=mlm.config.num_attention_heads,
        ffn_dim=48,
        dropout=0.1,
        audio_encoder=ast,
        pool_to=3,
    )
    g = torch.Generator().manual_seed(5)
    feats = DictFeatures({f"c{i}": torch.randn(32, 32, generator=g).half() for i in range(6)})
    model.train()
    tokens = EncodedTokens(model, feats)
    first = tokens.get("c0")
    assert model.audio_encoder.training  # its mode is restored
    with torch.no_grad():
        expected = model.eval().encoder_tokens(feats.get("c0").float()[None])[0]
    torch.testing.assert_close(first, expected)  # eval mode: dropout off, so repeatable
    torch.testing.assert_close(tokens.get("c0"), first)
    mean, std = audio_feature_statistics(tokens, list(feats.table))
    assert mean.shape == std.shape == (3, 16) and bool((std > 0).all())

    lr = 2e-3
    trainable = [p for p in model.parameters() if p.requires_grad]
    [one] = parameter_groups(model, TrainJob("animal", "ith", 0), FusionConfig(), lr)
    assert len(one["params"]) == len(trainable) and "lr" not in one
    rest, encoder = parameter_groups(model, TrainJob("animal", "ith", 0), FusionConfig(audio_encoder_lr_scale=0.1), lr)
    assert {id(p) for p in encoder["params"]} == {id(p) for p in ast.parameters()}
    assert encoder["lr"] == pytest.approx(2e-4) and "lr" not in rest
    assert len(rest["params"]) + len(encoder["params"]) == len(trainable)
