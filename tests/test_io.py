"""cft.io: JSON artifacts are strict JSON."""

from __future__ import annotations

import json
import math

import pytest

from cft.io import json_text, write_json_atomic


def _strict(token: str) -> float:
    raise ValueError(f"not JSON: {token}")


def test_json_artifacts_write_non_finite_numbers_as_null(tmp_path):
    """NaN and infinities (an interval from one seed, a score of no images) become null; a strict parser (one that
    refuses NaN, as jq and JavaScript do) reads the file back; finite numbers and other values are unchanged."""
    obj = {"a": math.nan, "b": [1.5, math.inf, (2, -math.inf)], "c": {"d": 0.25, "e": None, "f": "nan", "g": True}}
    path = write_json_atomic(tmp_path / "r.json", obj)
    with pytest.raises(ValueError, match="not JSON"):
        json.loads(json.dumps(math.nan), parse_constant=_strict)  # the parser does refuse NaN
    back = json.loads(path.read_text(), parse_constant=_strict)
    assert back == {"a": None, "b": [1.5, None, [2, None]], "c": {"d": 0.25, "e": None, "f": "nan", "g": True}}


def test_json_lines_are_strict_too():
    """One record per line (metrics.jsonl): compact, keys in the record's order, NaN as null."""
    assert json_text({"epoch": 1, "val_loss": math.nan, "lr": 1e-4}) == '{"epoch": 1, "val_loss": null, "lr": 0.0001}'


def test_file_sha256_reads_in_chunks_as_one_read_would(tmp_path):
    import hashlib

    from cft.io import file_sha256

    data = bytes(range(256)) * 9000  # over two 1 MiB chunks
    (tmp_path / "w.bin").write_bytes(data)
    assert file_sha256(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()
