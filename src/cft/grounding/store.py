"""The mask store: each image's concept masks and guidance mask on disk, one entry per image.

Layout under the store folder:

    store.json                    what made the masks: segmenter identity, guidance mode, the concept bank
    entries/<image id>.npz        compressed masks: `concepts` (K, H, W) bool in `names` order, `guidance` (H, W)
                                  uint8 (the guidance mask x 255: weights are kept to 1/255)
    entries/<image id>.json       metadata: class, concepts found, scores, foreground fractions, key, npz size

An image id is the image's path relative to the image root (e.g. `n01440764/n01440764_10026.JPEG`).
Each entry carries a key: a hash of the segmenter identity (model ids, thresholds), the guidance mode and the
concepts (with weights) of the image's class. An entry whose key differs from the current one is stale and is
made again, so a changed bank never serves old masks, and a changed class redoes only its images. The store has
one identity (segmenter settings, guidance mode, object masks: `claim` refuses others over existing entries), and
store.json records each class's key, which readers check every entry against (`check_identity`).

Writes are atomic: the npz first, then the JSON, which commits the entry. A killed run leaves at most an npz
without its JSON (an unfinished entry), which the next run makes again; an entry whose npz is missing or has
another size than its JSON records, or whose JSON does not parse, is corrupt and is made again too.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cft.errors import CftError
from cft.grounding.guidance import foreground_fraction, guidance_mask, is_suspect
from cft.io import fitting_name, is_fitted, write_bytes_atomic, write_json_atomic
from cft.segmenter import PhraseMasks

STORE_VERSION = 1
GUIDANCE_MODES = ("union", "weighted")
IDENTITY_FIELDS = ("segmenter", "mode", "object_masks")  # what one store's entries all share


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def class_key(identity: Mapping[str, Any], mode: str, concepts: Sequence[tuple[str, float]]) -> str:
    """The key of one class's masks: segmenter identity, guidance mode, the class's (concept, weight) list."""
    payload = {"v": STORE_VERSION, "segmenter": dict(identity), "mode": mode, "concepts": [list(c) for c in concepts]}
    return _sha(payload)[:20]


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """`a.b: 0.5 -> 0.2` for each field that differs between two nested settings."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = _differences(a, b, f"{prefix}{key}.")
            out.extend([inner] if inner else [])
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return "; ".join(out)


@dataclass(frozen=True)
class Entry:
    """One image's masks as read back from the store."""

    image_id: str
    names: list[str]  # concept phrases, in the order of `concepts`
    concepts: np.ndarray  # (K, H, W) bool
    guidance: np.ndarray  # (H, W) float32
    meta: dict[str, Any]


class MaskStore:
    """A folder of per-image mask entries (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.entries = self.folder / "entries"

    # ---- paths -------------------------------------------------------------------------------------------
    def _paths(self, image_id: str) -> tuple[Path, Path]:
        rel = Path(image_id)
        if rel.is_absolute() or ".." in rel.parts or not image_id:
            raise CftError(f"mask store: image id must be a relative path inside the image root, got {image_id!r}")
        base = self.entries / rel  # a name too long for the file system is shortened with a hash (the JSON keeps it)
        return base.with_name(fitting_name(base.name, ".npz")), base.with_name(fitting_name(base.name, ".json"))

    # ---- the store's description -------------------------------------------------------------------------
    def describe(self, info: Mapping[str, Any]) -> None:
        """Write store.json (what made the masks); earlier descriptions are kept under `history`."""
        path = self.folder / "store.json"
        history: list[Any] = []
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                history = [*old.get("history", []), {k: v for k, v in old.items() if k != "history"}][-20:]
            except (OSError, ValueError, AttributeError):
                history = []
        write_json_atomic(path, {"version": STORE_VERSION, **info, "history": history})

    def claim(self, settings: Mapping[str, Any], redo: bool = False) -> None:
        """Check that this store was made with `settings` (segmenter identity, guidance mode, object masks) before
        any entry is written: a store has one identity. Other settings over existing entries are an error that
        says what differs; `redo` removes every entry so the store is remade with the new settings."""
        differences = self.differences(settings)
        if not differences:
            return
        if redo:
            import shutil

            shutil.rmtree(self.entries)
            (self.folder / "index.json").unlink(missing_ok=True)
            return
        raise CftError(
            f"mask store {self.folder} holds {len(self.image_ids())} entries made with other settings "
            f"({differences}); a store has one identity: write to a new --out, or remake every entry "
            f"with these settings (`cft masks --redo`)"
        )

    def differences(self, settings: Mapping[str, Any]) -> str:
        """What differs (`mode: 'union' -> 'weighted'`, ...) between the settings this store's entries were made with
        and `settings`; empty when they agree or the store has no entries yet."""
        if not self.image_ids() or not (self.folder / "store.json").is_file():
            return ""
        old = {k: self.description().get(k) for k in IDENTITY_FIELDS}
        new = {k: settings.get(k) for k in IDENTITY_FIELDS}
        return "" if old == new else _differences(old, new)

    def check_identity(self, image_ids: Sequence[str]) -> None:
        """Every entry of `image_ids` must carry the key store.json records for its class: an entry made with
        other settings or concepts (a rerun over part of the images) is refused, naming it."""
        keys = self.description().get("class_keys")
        if not isinstance(keys, dict):
            return  # a store from before keys were recorded: its entries cannot be checked
        wrong = []
        for image_id in image_ids:
            meta = self.read_meta(image_id)
            if meta.get("key") != keys.get(meta.get("class")):
                wrong.append(image_id)
        if wrong:
            raise CftError(
                f"mask store {self.folder}: {len(wrong)} of {len(image_ids)} entries were made with other settings "
                f"or concepts than store.json records, e.g. {wrong[0]!r}; rerun `cft masks` over every image of "
                "the store (or pass --redo to remake it)"
            )

    def description(self) -> dict[str, Any]:
        path = self.folder / "store.json"
        if not path.is_file():
            raise CftError(f"{self.folder} is not a mask store (no store.json); make one with `cft masks`")
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise CftError(f"mask store {path}: not valid JSON ({e})") from None

    # ---- entries -----------------------------------------------------------------------------------------
    def status(self, image_id: str, key: str) -> str:
        """'done', 'missing', 'stale' (made with another key) or 'corrupt'."""
        npz, meta_path = self._paths(image_id)
        if not meta_path.is_file():
            return "missing"
        try:
            meta = json.loads(meta_path.read_text())
            size = int(meta["npz_bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return "corrupt"
        if not npz.is_file() or npz.stat().st_size != size:
            return "corrupt"
        if hashlib.sha256(npz.read_bytes()).hexdigest() != meta.get("npz_sha256"):
            return "corrupt"  # done only when the recorded checksum matches
        return "done" if meta.get("key") == key else "stale"

    def write(
        self,
        image_id: str,
        found: PhraseMasks,
        *,
        key: str,
        label: str,
        weights: Mapping[str, float] | None = None,
        mode: str = "union",
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store one image's masks (phrase -> (mask, score)) and its guidance mask; returns the metadata."""
        if mode not in GUIDANCE_MODES:
            raise CftError(f"guidance mode must be one of {', '.join(GUIDANCE_MODES)}, got {mode!r}")
        if not found:
            raise CftError(f"mask store: no phrases for image {image_id!r}")
        names = list(found)
        masks = [np.asarray(found[n][0]).astype(bool) for n in names]
        shapes = {m.shape for m in masks}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise CftError(f"mask store: the masks of image {image_id!r} must share one (H, W) size, got {shapes}")
        guidance = guidance_mask(dict(zip(names, masks, strict=True)), weights, mode)
        buf = io.BytesIO()
        quantized = np.rint(np.clip(guidance, 0.0, 1.0) * 255).astype(np.uint8)
        np.savez_compressed(buf, concepts=np.stack(masks), guidance=quantized, names=np.array(names))
        data = buf.getvalue()
        npz, meta_path = self._paths(image_id)
        write_bytes_atomic(npz, data)
        meta = {
            "image": image_id,
            "class": label,
            "key": key,
            "size": list(masks[0].shape),
            "concepts": {
                n: {"score": float(found[n][1]), "found": bool(m.any()), "fraction": foreground_fraction(m)}
                for n, m in zip(names, masks, strict=True)
            },
            "guidance_fraction": foreground_fraction(guidance),
            "suspect": is_suspect(guidance),
            "npz_bytes": len(data),
            "npz_sha256": hashlib.sha256(data).hexdigest(),
            **(dict(extra) if extra else {}),
        }
        write_json_atomic(meta_path, meta)
        return meta

    def read_meta(self, image_id: str) -> dict[str, Any]:
        _, meta_path = self._paths(image_id)
        try:
            return json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise CftError(f"mask store {self.folder}: no entry for image {image_id!r}; run `cft masks`") from None
        except ValueError as e:
            raise CftError(
                f"mask store {self.folder}: entry {image_id!r} is corrupt ({e}); rerun `cft masks`"
            ) from None

    def read(self, image_id: str, verify: bool = False) -> Entry:
        """One entry; `verify` also checks the npz against the sha256 its metadata records."""
        npz, _ = self._paths(image_id)
        meta = self.read_meta(image_id)
        try:
            data = npz.read_bytes()
        except FileNotFoundError:
            raise CftError(
                f"mask store {self.folder}: the masks of {image_id!r} are missing; rerun `cft masks`"
            ) from None
        if verify and hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            raise CftError(
                f"mask store {self.folder}: the masks of {image_id!r} ({npz}) are corrupt; rerun `cft masks`"
            )
        try:
            with np.load(io.BytesIO(data)) as z:
                guidance = z["guidance"].astype(np.float32) / 255
                return Entry(image_id, [str(n) for n in z["names"]], z["concepts"], guidance, meta)
        except (ValueError, OSError, KeyError, zipfile.BadZipFile, zlib.error) as e:  # any broken npz
            raise CftError(
                f"mask store {self.folder}: the masks of {image_id!r} ({npz}) are corrupt ({e}); rerun `cft masks`"
            ) from None

    def guidance(self, image_id: str) -> np.ndarray:
        """The guidance mask (H, W) uint8 of one image (0..255 for 0..1): what the trainer reads."""
        npz, _ = self._paths(image_id)
        try:
            with np.load(npz) as z:
                return z["guidance"]
        except FileNotFoundError:
            raise CftError(f"mask store {self.folder}: no masks for image {image_id!r}; run `cft masks`") from None
        except (ValueError, OSError, KeyError, zipfile.BadZipFile, zlib.error) as e:  # any broken npz
            raise CftError(
                f"mask store {self.folder}: the masks of {image_id!r} ({npz}) are corrupt ({e}); rerun `cft masks`"
            ) from None

    def image_ids(self) -> list[str]:
        """Every committed entry (those with metadata), sorted."""
        if not self.entries.is_dir():
            return []
        ids = []
        for path in self.entries.rglob("*.json"):
            stem = str(path.relative_to(self.entries))[: -len(".json")]
            if is_fitted(stem):  # a shortened name: the entry records its image id
                stem = str(json.loads(path.read_text()).get("image", stem))
            ids.append(stem)
        return sorted(ids)
