"""Stage 3 core: CLAP scores for generated candidates, and the rejection-sampling rule.

Scores come straight from in-memory waveforms: candidates are mixed to mono and resampled to
the CLAP model's own rate (48 kHz for laion/clap-htsat-fused) with soxr before feature
extraction. The reference release fed 44.1 kHz audio labelled as 48 kHz; that bug is not
copied. Every candidate's score is kept, so another threshold is a re-selection over stored
scores (`first_passing`), never a regeneration.

    scorer = ClapScorer.from_folder(paths["clap"], device="cuda:0")
    scores = scorer.score(waveforms, sample_rate=44100, texts=["dog barking"])  # (prompts, candidates)
    chosen, _ = first_passing(dict(enumerate(scores[0])), threshold=0.4, k=len(scores[0]))  # index or -1

laion-clap is not offered as a backend: it pins numpy<2 (pyarrow then fails to import) and
imports torchvision, which cannot be installed beside the CPU torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ith_core.audio import resample, to_mono  # noqa: F401 (re-exported: callers import them from here)
from ith_core.models.profiles import load_clap

NO_CANDIDATE = -1


def first_passing(candidates: Mapping[int, float], threshold: float, k: int) -> tuple[int, bool]:
    """The method's rule: (index of the first of candidates 0..k-1 whose score >= threshold, else -1,
    whether the stored candidates decide it).

    `candidates` maps index -> score of the stored candidates of one audio id. The rule needs
    candidates 0..j in order: a missing one before any pass leaves the answer undetermined.
    """
    for c in range(k):
        if c not in candidates:
            return NO_CANDIDATE, False
        if candidates[c] >= threshold:
            return c, True
    return NO_CANDIDATE, True


class ClapScorer:
    """transformers `ClapModel` + `ClapProcessor`: cosine of text and audio embeddings."""

    def __init__(self, model, processor, device: str = "cpu", batch_size: int = 32) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self.sample_rate = int(processor.feature_extractor.sampling_rate)

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", batch_size: int = 32) -> "ClapScorer":
        model, processor = load_clap(folder)
        return cls(model, processor, device, batch_size)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.processor.tokenizer(
                list(texts[i : i + self.batch_size]), padding=True, truncation=True, return_tensors="pt"
            ).to(self.device)
            features = self.model.get_text_features(**tokens)
            # transformers 5 returns an output object here, older versions a tensor.
            features = getattr(features, "pooler_output", features)
            out.append(torch.nn.functional.normalize(features.float(), dim=-1))
        return torch.cat(out)

    @torch.inference_mode()
    def audio_embeddings(self, mono: np.ndarray) -> torch.Tensor:
        """(n, samples) mono float32 at the model's rate -> (n, dim) unit vectors."""
        out = []
        for i in range(0, len(mono), self.batch_size):
            batch = list(mono[i : i + self.batch_size])
            # The extractor draws from numpy's global RNG: crops of clips longer than its window,
            # and, when no clip in the batch is longer, it flags a random one as "longer" (a
            # training trick) so that its score depends on its batch. A fixed private RNG state
            # makes crops reproducible, and the flags are recomputed from the clip lengths.
            state = np.random.get_state()
            try:
                np.random.seed(0)
                features = self.processor.feature_extractor(batch, sampling_rate=self.sample_rate, return_tensors="pt")
            finally:
                np.random.set_state(state)
            if "is_longer" in features:
                limit = self.processor.feature_extractor.nb_max_samples
                features["is_longer"] = torch.tensor([[len(w) > limit] for w in batch])
            features = {k: v.to(self.device) for k, v in features.items()}
            embeds = self.model.get_audio_features(**features)
            embeds = getattr(embeds, "pooler_output", embeds)
            out.append(torch.nn.functional.normalize(embeds.float(), dim=-1))
        return torch.cat(out)

    def score(self, waveforms: torch.Tensor | np.ndarray, sample_rate: int, texts: Sequence[str]) -> np.ndarray:
        """(prompts, candidates, channels, samples) waveforms at `sample_rate` -> (prompts, candidates) cosines.

        Candidate k of prompt i is scored against texts[i].
        """
        array = waveforms.detach().float().cpu().numpy() if isinstance(waveforms, torch.Tensor) else waveforms
        if array.ndim != 4 or array.shape[0] != len(texts):
            raise ValueError(
                f"waveforms must be (prompts={len(texts)}, candidates, channels, samples), "
                f"got shape {tuple(array.shape)}"
            )
        n_prompts, n_candidates = array.shape[:2]
        mono = to_mono(array).reshape(n_prompts * n_candidates, -1)
        audio = self.audio_embeddings(resample(mono, sample_rate, self.sample_rate))
        unique = sorted(set(texts))
        text = self.text_embeddings(unique)
        rows = torch.stack([text[unique.index(t)] for t in texts])
        audio = audio.reshape(n_prompts, n_candidates, -1)
        return torch.einsum("pkd,pd->pk", audio, rows).cpu().numpy().astype(np.float32)
