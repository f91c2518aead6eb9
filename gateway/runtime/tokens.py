"""Exact token counts for providers that send no ``usage``, from the model's own tokenizer.

A model's ``tokenizer`` (a Hugging Face tokenizer id, or a local directory such as the
engine's converted model) is loaded once per policy; the prompt is counted through its chat
template, as the model saw it, and the completion as generated text. Without a tokenizer the
ledger falls back to an estimate and marks the record ``estimated``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.providers import Usage


class TokenCounter:
    def __init__(self, name_or_path: str) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(name_or_path)

    def usage(self, messages: Sequence[Mapping[str, Any]], completion: str) -> Usage:
        conversation: Any = [dict(m) for m in messages]  # message contents may be lists
        prompt = len(
            self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        output = len(self._tokenizer.encode(completion, add_special_tokens=False))
        return Usage(prompt, output, prompt + output)
