"""Layout of precomputed audio features: safetensors shards keyed by audio id, under a run folder.

    <stage>/
      part-00000.safetensors   tensors named by audio id: encoder tokens (La, D) or input
                               features (frames, mel bins), fp16
      part-00000.parquet       the shard's index (audio_id, shard, shape, dtype); written after
                               its safetensors file, so its existence means the shard is whole
      features.json            kind, dims, dtype, encoder, shard count; written last

Shard membership is a pure function of the sorted distinct audio ids and `shard_size`, so a
rerun (or another rank working on `shards[rank::world_size]`) finds the same shards and skips
the finished ones. Reading never unpickles: safetensors only.

    store = FeatureStore(layout, "audio_features")
    reader = store.reader()          # reader.get(audio_id) -> torch.Tensor
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from storage.layout import RunLayout

INDEX_SCHEMA = pa.schema(
    [
        ("audio_id", pa.string()),
        ("shard", pa.int32()),
        ("num_tokens", pa.int32()),
        ("dim", pa.int32()),
        ("dtype", pa.string()),
    ]
)

MANIFEST = "features.json"


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}"


def plan_shards(audio_ids, shard_size: int) -> list[list[str]]:
    """Distinct audio ids, sorted, cut into shards of `shard_size`: deterministic across reruns."""
    ids = sorted(set(audio_ids))
    return [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]


class FeatureStore:
    def __init__(self, layout: RunLayout, stage: str) -> None:
        self.layout = layout
        self.stage = stage

    def shard_done(self, shard: int, expected_ids: list[str]) -> bool:
        name = shard_name(shard) + ".parquet"
        if not self.layout.exists(self.stage, name):
            return False
        index = self.layout.read_table(self.stage, name)
        # Cheap completeness check: same ids as planned (a changed plan means redo the shard).
        return sorted(index["audio_id"].to_pylist()) == sorted(expected_ids)

    def write_shard(self, shard: int, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        self.layout.write_bytes(safetensors_bytes(tensors), self.stage, shard_name(shard) + ".safetensors")
        rows = [
            {
                "audio_id": k,
                "shard": shard,
                "num_tokens": int(v.shape[0]),
                "dim": int(v.shape[-1]),
                "dtype": str(v.dtype).replace("torch.", ""),
            }
            for k, v in sorted(tensors.items())
        ]
        # The index goes second: it is the shard's completion marker.
        self.layout.write_table(
            pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), self.stage, shard_name(shard) + ".parquet"
        )

    def write_manifest(self, manifest: dict) -> None:
        self.layout.write_json(manifest, self.stage, MANIFEST)

    def manifest(self) -> dict | None:
        return self.layout.read_json(self.stage, MANIFEST) if self.layout.exists(self.stage, MANIFEST) else None

    def index(self) -> pa.Table:
        files = sorted(
            f
            for f in self.layout.fs.ls(self.layout.path(self.stage), detail=False)
            if posixpath.basename(f).startswith("part-") and f.endswith(".parquet")
        )
        tables = [self.layout.read_table(self.stage, posixpath.basename(f)) for f in files]
        return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()

    def reader(self) -> "FeatureReader":
        return FeatureReader(str(self.layout.local_dir(self.stage)), self.index())


class FeatureReader:
    """audio id -> tensor, read lazily (memory-mapped) from the local copy of the shards."""

    def __init__(self, local_dir: str, index: pa.Table) -> None:
        self.local_dir = local_dir
        self.shard_of = dict(zip(index["audio_id"].to_pylist(), index["shard"].to_pylist()))
        self._open: dict[int, object] = {}

    def __contains__(self, audio_id: str) -> bool:
        return audio_id in self.shard_of

    def __len__(self) -> int:
        return len(self.shard_of)

    def get(self, audio_id: str) -> torch.Tensor:
        if audio_id not in self.shard_of:
            raise KeyError(
                f"audio id {audio_id!r} has no precomputed features in {self.local_dir}; "
                "rerun the audio-encoding stage on the current selection table"
            )
        shard = self.shard_of[audio_id]
        handle = self._open.get(shard)
        if handle is None:
            handle = safe_open(posixpath.join(self.local_dir, shard_name(shard) + ".safetensors"), framework="pt")
            self._open[shard] = handle
        return handle.get_tensor(audio_id)

    def __getstate__(self):
        # DataLoader workers / pickling: reopen the shards in the new process.
        return {"local_dir": self.local_dir, "shard_of": self.shard_of, "_open": {}}
