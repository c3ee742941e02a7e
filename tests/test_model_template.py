"""An imported model's own chat template: a ChatML one with a default system turn (SmolLM2's)
is rendered by chatsmith's chat format with that turn added; another is rendered by Jinja."""

from __future__ import annotations

import pytest

from chatsmith.common.errors import ChatsmithError
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_conversation, encode_prompt, render, style

# SmolLM2-135M-Instruct's template, as its GGUF file carries it.
SMOL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
LLAMA3 = (
    "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
    "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
USER = [{"role": "user", "content": "Hi, 你好"}]


def with_template(tok: BPETokenizer, template: str) -> BPETokenizer:
    return BPETokenizer(tok.tok, {"chat_template": template, "eos_token": "<|im_end|>"}, None)


def test_a_chatml_template_keeps_its_default_system_turn(tiny_tok) -> None:
    tok = with_template(tiny_tok, SMOL)
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert style(tok).chatml and style(tok).default_system == system
    want = render([{"role": "system", "content": system}, *USER], add_generation_prompt=True)[0]
    assert tok.decode(encode_prompt(tok, USER)) == want
    own = [{"role": "system", "content": "Be brief."}, *USER]
    assert tok.decode(encode_prompt(tok, own)) == render(own, add_generation_prompt=True)[0]
    ids, mask = encode_conversation(tok, [*USER, {"role": "assistant", "content": "Hello"}])
    assert tok.decode(ids).startswith("<|im_start|>system\n" + system) and sum(mask) > 0
    assert style(tiny_tok).template is None and style(tiny_tok).default_system is None


def test_another_template_is_rendered_by_jinja_and_not_trained_on(tiny_tok) -> None:
    tok = with_template(tiny_tok, LLAMA3)
    assert not style(tok).chatml
    text = tok.decode(encode_prompt(tok, USER))
    assert text == "<|start_header_id|>user<|end_header_id|>\n\nHi, 你好<|eot_id|>" + (
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    with pytest.raises(ChatsmithError, match="not ChatML"):
        encode_conversation(tok, [*USER, {"role": "assistant", "content": "Hello"}])
