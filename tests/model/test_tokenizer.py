"""The tiny preset's bundled tokenizer and the LLaMA-3 conventions it shares with the paper preset."""

from __future__ import annotations

import json

import pytest

from vlsa_platform.model import tokenizer as tk

SAMPLE = (
    "A small red circle is in the top left corner; a blue square is below it.\n\n"
    "What are the VQ indices of the 4 x 4 window at row 3, column 17? 4095 0 17 230 1203 88\n"
    "The mean RGB values are (128, 64, 255) and (0, 9, 99). It's 12:30, isn't it?  Tabs\tand  spaces.\n"
    "Unicode: café, naïve, 東京, emoji 🙂."
)


@pytest.fixture(scope="module")
def bundled():
    return tk.load_tiny_tokenizer()


@pytest.fixture(scope="module")
def fresh():
    return tk.build_tiny_tokenizer()


def test_bundled_tokenizer_equals_a_fresh_build(bundled, fresh):
    assert bundled.get_vocab() == fresh.get_vocab()
    assert bundled.encode(SAMPLE) == fresh.encode(SAMPLE)
    bundled_model = json.loads(bundled.backend_tokenizer.to_str())["model"]
    fresh_model = json.loads(fresh.backend_tokenizer.to_str())["model"]
    assert bundled_model["merges"] == fresh_model["merges"]


def test_vocab_size(bundled):
    assert len(bundled) == tk.TINY_VOCAB_SIZE == 1024
    assert max(bundled.get_vocab().values()) == tk.TINY_VOCAB_SIZE - 1


def test_special_tokens_have_single_ids(bundled):
    for token in tk.TINY_SPECIAL_TOKENS:
        ids = bundled.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
        assert bundled.convert_ids_to_tokens(ids[0]) == token
    assert bundled.bos_token == "<|begin_of_text|>"
    assert bundled.eos_token == "<|eot_id|>"
    assert bundled.pad_token == "<|finetune_right_pad_id|>"
    assert len({bundled.bos_token_id, bundled.eos_token_id, bundled.pad_token_id}) == 3
    assert tk.IMAGE_TOKEN == {"tiny": "<image>", "paper": "<|reserved_special_token_0|>"}


def test_image_token_is_one_token_in_context(bundled):
    ids = bundled.encode("<image>\nDescribe the picture.", add_special_tokens=False)
    image_id = bundled.convert_tokens_to_ids("<image>")
    assert ids[0] == image_id
    assert ids.count(image_id) == 1
    assert bundled.encode("a<image>b", add_special_tokens=False).count(image_id) == 1


def test_encode_adds_bos_like_llama3(bundled):
    ids = bundled.encode("hello")
    assert ids[0] == bundled.bos_token_id
    assert bundled.encode("hello", add_special_tokens=False) == ids[1:]


def test_chat_template_has_the_llama3_layout(bundled):
    assert bundled.chat_template == tk.LLAMA3_CHAT_TEMPLATE
    messages = [
        {"role": "user", "content": "<image>\nWhat shape is in the center?"},
        {"role": "assistant", "content": "A green triangle. "},
        {"role": "user", "content": "How many are there?"},
        {"role": "assistant", "content": "3"},
    ]
    text = bundled.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat shape is in the center?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA green triangle.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow many are there?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n3<|eot_id|>"
    )
    prompt = bundled.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    # Tokenizing the rendered text gives exactly one bos and the special tokens as single ids.
    ids = bundled.encode(text, add_special_tokens=False)
    assert ids[0] == bundled.bos_token_id and ids.count(bundled.bos_token_id) == 1
    assert ids.count(bundled.eos_token_id) == 4
    assert ids.count(bundled.convert_tokens_to_ids("<|start_header_id|>")) == 4


def test_numbers_tokenize_compactly(bundled):
    vocab = bundled.get_vocab()
    assert all(str(n) in vocab for n in range(256)), "every 0-255 value is one token"
    assert len(bundled.encode("128 64 255", add_special_tokens=False)) == 5
    assert len(bundled.encode("4095", add_special_tokens=False)) <= 2
    for n in (0, 9, 99, 1000, 2048, 3333, 4095):
        assert len(bundled.encode(str(n), add_special_tokens=False)) <= 3, n
    sixteen = " ".join(str(i) for i in range(4080, 4096))
    assert len(bundled.encode(sixteen, add_special_tokens=False)) <= 16 * 3 + 15


@pytest.mark.parametrize(
    "text", [SAMPLE, "", " leading and trailing  ", "\n\n\n", "x" * 300, "0123456789" * 5, "(1,2)-[3;4]{5}"]
)
def test_round_trip(bundled, text):
    assert bundled.decode(bundled.encode(text, add_special_tokens=False)) == text
    assert bundled.decode(bundled.encode(text), skip_special_tokens=True) == text


def test_load_returns_independent_copies():
    a = tk.load_tiny_tokenizer()
    a.add_tokens(["<vq_0>", "<vq_1>"], special_tokens=True)
    b = tk.load_tokenizer("tiny")
    assert len(a) == tk.TINY_VOCAB_SIZE + 2
    assert len(b) == tk.TINY_VOCAB_SIZE


def test_cli_check_reports_bundled_files_match(capsys):
    assert tk.main([]) == 0
    assert "match" in capsys.readouterr().out


def test_cli_rebuild_writes_loadable_files(tmp_path):
    assert tk.main(["--rebuild", "--out", str(tmp_path)]) == 0
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    assert not list(tmp_path.glob("*.jinja")), "the chat template must stay in tokenizer_config.json"
    rebuilt = tk.load_tiny_tokenizer(tmp_path)
    assert rebuilt.get_vocab() == tk.load_tiny_tokenizer().get_vocab()
    assert rebuilt.chat_template == tk.LLAMA3_CHAT_TEMPLATE


def test_prepare_paper_tokenizer_fills_template_and_pad():
    tok = tk.load_tiny_tokenizer()  # has LLaMA-3's special-token names, so it stands in for the real one
    tok.chat_template = None
    tok.pad_token = None
    tok.eos_token = "<|end_of_text|>"
    tk.prepare_paper_tokenizer(tok)
    assert tok.chat_template == tk.LLAMA3_CHAT_TEMPLATE
    assert tok.eos_token == "<|eot_id|>"
    assert tok.pad_token == "<|finetune_right_pad_id|>"


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="preset"):
        tk.load_tokenizer("huge")
