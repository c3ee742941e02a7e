"""A model's own chat template (from its tokenizer_config.json), rendered as transformers does.

An imported model keeps the template it was trained with. Where that template is ChatML with at
most a default system turn (SmolLM2's, Qwen's), chatsmith's chat format renders it, loss mask
and tool calls included; `style` says which case a tokenizer is, found once by rendering probe
conversations both ways and comparing the text.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatsmith.common.errors import ChatsmithError

# Content no real template alters, so the probe shows only the template's own text.
_PROBE = "\x01probe\x02"


@dataclass(frozen=True)
class TemplateStyle:
    template: str | None  # the model's Jinja template; None: chatsmith's own ChatML
    chatml: bool  # chatsmith's renderer gives the same text
    default_system: str | None  # the system turn the template adds when a conversation has none


CHATML = TemplateStyle(None, True, None)


def template_of(config: dict[str, Any] | None) -> str | None:
    """chat_template as a string (a list of named templates takes the one named default)."""
    tpl = (config or {}).get("chat_template")
    if isinstance(tpl, list):
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default")
    return tpl if isinstance(tpl, str) and tpl else None


def _token(config: dict[str, Any], key: str) -> str:
    v = config.get(key)
    return (v.get("content") if isinstance(v, dict) else v) or ""


def render_template(
    template: str, config: dict[str, Any], messages: list[dict[str, Any]], add_generation_prompt: bool
) -> str:
    """The template rendered with what transformers' apply_chat_template passes to it."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str) -> None:
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, **_: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    try:
        return env.from_string(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=_token(config, "bos_token"),
            eos_token=_token(config, "eos_token"),
        )
    except jinja2.exceptions.TemplateError as e:
        raise ChatsmithError(f"the model's chat template failed: {e}") from None


def find_style(config: dict[str, Any] | None, render_chatml: Any) -> TemplateStyle:
    """How to render for a model with this tokenizer_config; render_chatml(messages, gen) -> text."""
    template = template_of(config)
    if template is None:
        return CHATML
    cfg = config or {}
    user = [{"role": "user", "content": _PROBE}]
    convs = [
        [{"role": "system", "content": _PROBE}, *user, {"role": "assistant", "content": _PROBE}, *user],
        [*user, {"role": "assistant", "content": _PROBE}, *user],
    ]
    system = None
    with contextlib.suppress(ChatsmithError):
        bare = render_template(template, cfg, user, True)
        ours = render_chatml(user, True)
        head = "<|im_start|>system\n"
        if bare != ours and bare.startswith(head) and bare.endswith("<|im_end|>\n" + ours):
            system = bare[len(head) : -len("<|im_end|>\n" + ours)]

        def same(conv: list[dict[str, Any]]) -> bool:
            lead = [{"role": "system", "content": system}] if system and conv[0]["role"] != "system" else []
            return render_template(template, cfg, conv, True) == render_chatml(lead + conv, True)

        if all(same(c) for c in convs):
            return TemplateStyle(template, True, system)
    return TemplateStyle(template, False, None)
