"""The planted-signal benchmark: AuditoryBench's layout and schemas, with answers only the audio can give.

`ith run --benchmark synthetic` runs every production stage on it: ingestion reads its CSV files
like the real ones, the span detector is trained on its train split, imagination plans and
shards prompts and stores CLAP scores, AST features are precomputed, ITH and text-only are
trained through `accelerate launch`, evaluated and reported. Only the generator differs: the
`tone` backend (ith_core.imagination.tone_generator) renders each source's hidden tone. It is a check that
the audio path carries information end to end, never a text-to-audio model.

Two tasks, in the two shapes of AuditoryBench:

- animal-like (`animal_sound_recognition/`): "A [MASK] makes a kelomit call." The answer is one
  of four animals (single wordpieces, `SyntheticConfig.animals`), four options A-D per row,
  scored by exact match over the whole vocabulary. Each animal owns a band of tone frequencies;
  a source's hidden tone lies in its animal's band.
- pitch-like (`sound_pitch_comparison/`): "The sound of a kelomit is [MASK] than the sound of a
  whistle." The answer is `higher` when the source's hidden tone is above the whistle's 1 kHz.

What keeps the text uninformative: source names are made-up syllable strings, drawn without
regard to the answer; every name belongs to one task and one split (no dev/test/wiki name occurs
in train); answers are balanced within each split; each name's rows take distinct templates,
chosen independently of the answer, so templates, lengths and [MASK] positions carry no label
information. A text-only model can only learn the answer distribution: chance is 25 % (animal)
and 50 % (pitch) on every split. Rows sharing a source name are not independent, so evaluation
bootstraps intervals by source name (`bootstrap_unit`).

Files (`ensure_benchmark` writes them once per settings into `<data home>/synthetic/<hash>/`,
atomically, so every worker regenerates or reuses the same bytes):

    animal_sound_recognition/{train,dev,test,wiki}.csv   animal, span|description, sentence, A-D, Answer
    sound_pitch_comparison/{train,dev,test,wiki}.csv     sentence, answer, span1, span2 (wiki: span1, span2, sentence, answer)
    tone_generator/tone_generator.json                   name -> hidden tone (Hz): the tone generator's "weights"
                                                         (with synthetic.tone_error_rate set: the rate and each
                                                         name's wrong bands)
    planted_scorer/planted_scorer.json                   name -> hidden tone (Hz), written on first use of
                                                         synthetic.scorer=planted (planted_scorer_dir)
    synthetic.json                                       settings, row counts, answer counts per split
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import shutil
import uuid
from pathlib import Path

from ith_core.config import SPLITS, SYNTHETIC_MECHANISM_DEFAULTS, SyntheticConfig
from ith_core.imagination.planted_scorer import PLANTED_SCORER_FILE, PLANTED_SCORER_VERSION, WINDOW_OCTAVES
from ith_core.imagination.tone_generator import RENDER_VERSION
from storage.layout import ith_home

# Bump when the generator of the files changes what it writes for the same settings.
SYNTHETIC_VERSION = 1
ANCHOR = "whistle"
ANCHOR_HZ = 1000.0
# The animal-like task's tone bands: four bands an octave and a third apart (log2 centres),
# sources jittered by up to a fifth of the gap around their band's centre.
ANIMAL_BAND_HZ = (250.0, 630.0, 1590.0, 4000.0)
ANIMAL_JITTER_OCTAVES = 0.25
# Pitch-like task: hidden tones well below or well above the whistle.
PITCH_LOW_HZ = (250.0, 700.0)
PITCH_HIGH_HZ = (1430.0, 4000.0)

ANIMAL_TEMPLATES = (
    "A [MASK] makes a {d}.",
    "The {d} you hear comes from a [MASK].",
    "That {d} belongs to a [MASK].",
    "Listen to the {d}: it is a [MASK].",
    "When a {d} sounds, a [MASK] is near.",
    "Only a [MASK] would make such a {d}.",
)
PITCH_TEMPLATES = (
    "The sound of a {a} is [MASK] than the sound of a {b}.",
    "A {a} sounds [MASK] than a {b}.",
    "The {a} has a [MASK] pitch than the {b}.",
    "Heard side by side, the {a} is [MASK] than the {b}.",
    "Is the {a} higher or lower than the {b}? It is [MASK].",
    "Next to a {b}, a {a} sounds [MASK] than it.",
)

_ONSETS = "b d f g k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()
_CODAS = ("", "", "n", "r", "t", "k", "s", "m")

TASK_DIRS = {"animal": "animal_sound_recognition", "pitch": "sound_pitch_comparison"}
TONE_FILE = "tone_generator.json"


def settings_hash(cfg: SyntheticConfig) -> str:
    """Hash of what the benchmark's files hold: the rows, the hidden tones and the tone table.

    `pool_coverage` and `scorer` change no file and are left out; `tone_error_rate` enters the
    tone table, so it counts when it is set (at 0 the hash is the one of every earlier run).
    """
    settings = cfg.model_dump(mode="json")
    for key, default in SYNTHETIC_MECHANISM_DEFAULTS.items():
        if key != "tone_error_rate" or settings[key] == default:
            settings.pop(key)
    blob = json.dumps({"version": SYNTHETIC_VERSION, "renderer": RENDER_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rows_hash(cfg: SyntheticConfig) -> str:
    """Hash of the rows and hidden tones alone (the tone generator's error rate left out): what the
    AudioBERT pool's clips derive from, so every error rate retrieves from the same pool."""
    return settings_hash(cfg.model_copy(update={"tone_error_rate": 0.0}))


def data_home() -> Path:
    """`$ITH_HOME/data` (default ~/.cache/ith/data), where downloaded and generated benchmarks live."""
    return ith_home() / "data"


def benchmark_dir(cfg: SyntheticConfig) -> Path:
    return data_home() / "synthetic" / settings_hash(cfg)


def _made_up_names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    """`n` new names of three syllables (e.g. "kelomit"), none in `taken` (which grows)."""
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(3)) + rng.choice(_CODAS)
        if name not in taken and name != ANCHOR:
            taken.add(name)
            names.append(name)
    return names


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    sink = io.StringIO(newline="")
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return sink.getvalue().encode("utf-8")


def build(cfg: SyntheticConfig) -> dict[str, bytes]:
    """Relative path -> file bytes of the whole benchmark (deterministic in `cfg`)."""
    rng = random.Random(cfg.seed)
    taken: set[str] = set()
    tones: dict[str, float] = {ANCHOR: ANCHOR_HZ}
    files: dict[str, bytes] = {}
    counts: dict[str, dict] = {}
    letters = ("A", "B", "C", "D")
    animals = list(cfg.animals)
    # Imperfect imagination: the bands a wrong candidate of each name may render (every other
    # answer's band), written only when the error rate is set, so the default table is unchanged.
    wrong_bands: dict[str, list[list[float]]] = {}
    animal_bands = [
        [round(hz * 2**-ANIMAL_JITTER_OCTAVES, 3), round(hz * 2**ANIMAL_JITTER_OCTAVES, 3)] for hz in ANIMAL_BAND_HZ
    ]
    for split in SPLITS:
        n_names, per_name = cfg.names[split], cfg.rows_per_name[split]
        # -- animal-like: a balanced answer per name, the name's tone in that answer's band
        rows = []
        answers = [animals[i % len(animals)] for i in range(n_names)]
        rng.shuffle(answers)
        for name, animal in zip(_made_up_names(rng, n_names, taken), answers):
            centre = math.log2(ANIMAL_BAND_HZ[animals.index(animal)])
            tones[name] = round(2 ** (centre + rng.uniform(-ANIMAL_JITTER_OCTAVES, ANIMAL_JITTER_OCTAVES)), 3)
            wrong_bands[name] = [b for i, b in enumerate(animal_bands) if i != animals.index(animal)]
            description = f"{name} call"
            for template in rng.sample(ANIMAL_TEMPLATES, min(per_name, len(ANIMAL_TEMPLATES))):
                options = rng.sample(animals, len(animals))
                rows.append(
                    [animal, description, template.format(d=description), *options, letters[options.index(animal)]]
                )
        rng.shuffle(rows)
        span_column = "span" if split == "train" else "description"
        files[f"{TASK_DIRS['animal']}/{split}.csv"] = _csv_bytes(
            ["animal", span_column, "sentence", *letters, "Answer"], rows
        )
        counts[f"animal/{split}"] = {
            "rows": len(rows),
            "names": n_names,
            "answers": {a: answers.count(a) * per_name for a in animals},
        }
        # -- pitch-like: half the names below the whistle, half above
        rows = []
        answers = ["lower" if i % 2 == 0 else "higher" for i in range(n_names)]
        rng.shuffle(answers)
        for name, answer in zip(_made_up_names(rng, n_names, taken), answers):
            low, high = PITCH_LOW_HZ if answer == "lower" else PITCH_HIGH_HZ
            tones[name] = round(_log_uniform(rng, low, high), 3)
            wrong_bands[name] = [list(PITCH_HIGH_HZ if answer == "lower" else PITCH_LOW_HZ)]
            for template in rng.sample(PITCH_TEMPLATES, min(per_name, len(PITCH_TEMPLATES))):
                sentence = template.format(a=name, b=ANCHOR)
                rows.append({"sentence": sentence, "answer": answer, "span1": name, "span2": ANCHOR})
        rng.shuffle(rows)
        # Upstream's wiki file orders its columns span1, span2, sentence, answer.
        header = (
            ["span1", "span2", "sentence", "answer"] if split == "wiki" else ["sentence", "answer", "span1", "span2"]
        )
        files[f"{TASK_DIRS['pitch']}/{split}.csv"] = _csv_bytes(header, [[r[c] for c in header] for r in rows])
        counts[f"pitch/{split}"] = {
            "rows": len(rows),
            "names": n_names,
            "answers": {a: answers.count(a) * per_name for a in ("higher", "lower")},
        }
    tone_table = {
        "kind": "tone",
        "version": SYNTHETIC_VERSION,
        "renderer": RENDER_VERSION,
        "anchor": ANCHOR,
        "what": "hidden tone (Hz) of every source name of the synthetic benchmark; read by the tone "
        "generator, never by the language model",
        "tones_hz": dict(sorted(tones.items())),
    }
    if cfg.tone_error_rate > 0:
        tone_table["error_rate"] = cfg.tone_error_rate
        tone_table["wrong_bands_hz"] = dict(sorted(wrong_bands.items()))
    files[f"tone_generator/{TONE_FILE}"] = json.dumps(tone_table, indent=2).encode()
    files["synthetic.json"] = json.dumps(
        {
            "version": SYNTHETIC_VERSION,
            "settings": cfg.model_dump(mode="json"),
            "hash": settings_hash(cfg),
            "counts": counts,
        },
        indent=2,
    ).encode()
    return files


def ensure_benchmark(cfg: SyntheticConfig, target: Path | None = None) -> Path:
    """The benchmark folder for `cfg`, written once (whole, or not at all) and reused afterwards."""
    target = Path(target) if target else benchmark_dir(cfg)
    marker = target / "synthetic.json"
    if marker.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        for relative, data in build(cfg).items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            staging.rename(target)
        except OSError:
            # A concurrent writer published the same bytes first.
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tone_generator_dir(cfg: SyntheticConfig) -> Path:
    return ensure_benchmark(cfg) / "tone_generator"


def planted_scorer_dir(cfg: SyntheticConfig) -> Path:
    """The planted scorer's folder (`synthetic.scorer=planted`), written beside the tone table on first use.

    Its `planted_scorer.json` holds the hidden tone of every name (the scorer's "weights") and the
    width of the window it measures; it does not depend on the error rate, so its identity (the
    `clap_id` of stored scores) is the same for every error rate.
    """
    folder = ensure_benchmark(cfg) / "planted_scorer"
    path = folder / PLANTED_SCORER_FILE
    if path.is_file():
        return folder
    tones = json.loads((folder.parent / "tone_generator" / TONE_FILE).read_text())["tones_hz"]
    table = {
        "kind": "planted-scorer",
        "version": PLANTED_SCORER_VERSION,
        "window_octaves": WINDOW_OCTAVES,
        "what": "hidden tone (Hz) of every source name of the synthetic benchmark: the planted scorer measures "
        "how much of a clip's spectral energy lies around the tone of the source its text names; not CLAP",
        "tones_hz": tones,
    }
    folder.mkdir(exist_ok=True)
    staging = folder / f".tmp-{uuid.uuid4().hex[:8]}.json"
    staging.write_text(json.dumps(table, indent=2))
    staging.replace(path)  # atomic: concurrent writers publish the same bytes
    return folder


def source_names(cfg: SyntheticConfig) -> set[str]:
    """Every made-up source name of the benchmark (the anchor, a real word, is not one)."""
    table = json.loads((tone_generator_dir(cfg) / TONE_FILE).read_text())
    return {name for name in table["tones_hz"] if name != ANCHOR}


def without_source_names(texts: list[str], cfg: SyntheticConfig) -> list[str]:
    """`texts` with the source names cut out: what a tokenizer may learn from, so that no name
    becomes a vocabulary entry (the names stay "unknown to the LM's vocabulary", in pieces)."""
    names = source_names(cfg)
    out = []
    for text in texts:
        words = [w for w in text.split() if w.strip(".,:;?!").casefold() not in names]
        if words:
            out.append(" ".join(words))
    return out


def bootstrap_unit(example: dict) -> str:
    """The independent unit of a synthetic row: its source name (the first gold span, case-folded)."""
    spans = example.get("spans") or []
    return " ".join(spans[0].split()).casefold() if spans else example["example_id"]
