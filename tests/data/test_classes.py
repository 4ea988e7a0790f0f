"""Class specs: imagenet, world, a file, a folder, a comma-separated list."""

from __future__ import annotations

import pytest

from cft.data.classes import resolve_classes
from cft.errors import CftError
from cft.world import SyntheticWorld


def test_imagenet_has_1000_unique_readable_names():
    names = resolve_classes("imagenet")
    assert len(names) == 1000 == len(set(names))
    assert names[0] == "tench" and names[1] == "goldfish" and names[2] == "great white shark"
    assert "crane (bird)" in names and "crane (machine)" in names
    assert not any(n.startswith("n0") for n in names)  # readable names, not WordNet ids


def test_world():
    assert resolve_classes("world") == list(SyntheticWorld().classes)
    assert "bird" in resolve_classes("world")


def test_text_file_ignores_blanks_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\ngoldfish\n\n  tabby cat  # a comment\n#skip\nhouse finch\n")
    assert resolve_classes(str(path)) == ["goldfish", "tabby cat", "house finch"]


def test_folder_of_class_folders(tmp_path):
    for name in ("zebra", "goldfish", "tabby cat", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "readme.txt").write_text("not a class")
    assert resolve_classes(str(tmp_path)) == ["goldfish", "tabby cat", "zebra"]


def test_comma_list():
    assert resolve_classes(" goldfish, tabby cat ,,house finch, ") == ["goldfish", "tabby cat", "house finch"]
    assert resolve_classes("goldfish") == ["goldfish"]


def test_errors(tmp_path):
    with pytest.raises(CftError, match="gives no class names"):
        resolve_classes(" , ,")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(CftError, match=f"file {empty} gives no class names"):
        resolve_classes(str(empty))
    (tmp_path / "dir").mkdir()
    with pytest.raises(CftError, match="folder .*dir gives no class names"):
        resolve_classes(str(tmp_path / "dir"))
    with pytest.raises(CftError, match="duplicate class name.*: goldfish"):
        resolve_classes("goldfish, cat, goldfish")
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n")
    with pytest.raises(CftError, match="duplicate class name.*: a"):
        resolve_classes(str(dup))
    with pytest.raises(CftError, match="no such file or folder"):
        resolve_classes(str(tmp_path / "missing.txt"))
    with pytest.raises(CftError, match="empty class spec"):
        resolve_classes("  ")
