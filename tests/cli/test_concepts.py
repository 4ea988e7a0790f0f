"""`cft concepts ...` end to end: a hand bank, an OpenAI-compatible server on 127.0.0.1, and clear errors."""

from __future__ import annotations

import json

import pytest

from cft.cli import main
from cft.concepts.bank import ConceptBank
from tests.helpers.chat_server import canned, reply

KEY_ENV = "CFT_TEST_CLI_KEY"


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_bank_filter_validate_chain(tmp_path):
    hand = tmp_path / "hand.yaml"
    hand.write_text("bird: [beak, [wing, 0.5], water, engine, bird]\ncar: [wheel, window, headlight]\n")
    bank, filtered, valid = (tmp_path / f"{n}.json" for n in ("bank", "filtered", "valid"))
    assert (
        main(
            [
                "concepts",
                "propose",
                "--classes",
                "bird,car",
                "--backend",
                "bank",
                "--bank",
                str(hand),
                "--out",
                str(bank),
            ]
        )
        == 0
    )
    assert main(["concepts", "filter", str(bank), "--classes", "world", "--out", str(filtered)]) == 0
    assert main(["concepts", "validate", str(filtered), "--images-per-class", "20", "--out", str(valid)]) == 0
    out = ConceptBank.load(valid)
    assert [c.name for c in out.concepts["bird"]] == ["beak", "wing"]
    assert out.concepts["bird"][1].weight == 0.5
    reasons = {d["name"]: d["reason"] for d in out.dropped["bird"]}
    assert reasons["bird"] == "is the class name" and "occurrence 0 %" in reasons["water"]
    stats = json.loads(valid.with_suffix(".stats.json").read_text())
    assert stats["classes"]["car"]["coverage"] >= 0.2
    raw = json.loads(valid.read_text())
    assert set(raw) == {"concepts", "dropped", "provenance"}


def test_openai_propose_as_the_issue_writes_it(serve, tmp_path):
    server = serve(canned)
    out = tmp_path / "bank.json"
    args = [
        "concepts",
        "propose",
        "--classes",
        "duck,fire truck",
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--model",
        "test-model",
        "--api-key-env",
        KEY_ENV,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    bank = ConceptBank.load(out)
    assert set(bank.concepts) == {"duck", "fire truck"}
    kinds = {c.kind for c in bank.concepts["duck"]}
    assert kinds == {"important", "around", "superclass"}
    assert bank.provenance["backend"] == "openai" and bank.provenance["model"] == "test-model"
    assert bank.provenance["sampling"]["n"] == 2
    asked = len(server.requests)
    assert main(args) == 0 and len(server.requests) == asked  # the rerun is served from the cache


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "/nonexistent/classes.txt"], "classes"),
        (["--classes", " , "], "class"),
        (["--classes", "duck", "--base-url", "https://api.example.invalid/v1"], KEY_ENV),
        (["--classes", "duck", "--base-url", "http://127.0.0.1:9/v1"], "127.0.0.1:9"),
        (["--classes", "duck"], "--base-url"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "bank.json"
    base = ["concepts", "propose", "--backend", "openai", "--model", "m", "--api-key-env", KEY_ENV, "--timeout", "1"]
    args = base + extra + ["--out", str(out)]
    if "--base-url" not in extra and "--classes" in extra and extra[1] not in ("duck",):
        args += ["--base-url", "http://127.0.0.1:9/v1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cft: error:") and message in err and "Traceback" not in err
    assert not out.exists()


def test_server_error_reply_is_named(serve, tmp_path, capsys):
    server = serve(lambda body, h, i: reply(raw={"error": {"message": "model 'nope' not found"}}, status=404))
    out = tmp_path / "bank.json"
    assert (
        main(
            [
                "concepts",
                "propose",
                "--classes",
                "duck",
                "--backend",
                "openai",
                "--base-url",
                server.url,
                "--model",
                "nope",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err and not out.exists()
