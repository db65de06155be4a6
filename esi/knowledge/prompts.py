"""Class prompts from the knowledge base: the text a zero-shot classifier compares an ECG with."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")


def first_sentence(text: str) -> str:
    match = _FIRST_SENTENCE.match(text.strip())
    return match.group(1) if match else text.strip()


def class_prompts(class_names: Sequence[str], entries: Iterable) -> tuple[dict[str, str], list[str]]:
    """A prompt per class from the CQA knowledge base, and the classes it has nothing for.

    A class that is an SCP statement uses its entry `scp:CODE`: title plus first sentence. A PTB-XL
    superclass or subclass (e.g. `MI`, `LAFB/LPFB`) uses the titles of the statement entries tagged
    `class:NAME` or `subclass:NAME`.
    """
    entries = list(entries)
    by_id = {entry.id: entry for entry in entries}
    prompts, missing = {}, []
    for name in class_names:
        entry = by_id.get(f"scp:{name}")
        if entry is not None:
            prompts[name] = f"{entry.title}. {first_sentence(entry.text)}"
            continue
        members = [e.title for e in entries if f"class:{name}" in e.tags or f"subclass:{name}" in e.tags]
        if members:
            prompts[name] = "; ".join(members) + "."
        else:
            missing.append(name)
    return prompts, missing
