"""Folding Vivid Flow's motion parameters into the text prompt Veo receives."""

from __future__ import annotations

from vividflow.jobspec import VeoParams

_LABELS = (
    ("Camera", "camera_motion"),
    ("Subject", "subject_animation"),
    ("Environment", "environmental_animation"),
)


def fold_prompt(prompt: str, params: VeoParams) -> str:
    """Return the prompt Veo gets for ``prompt`` and ``params``.

    Veo's API has no camera, subject or environment motion fields, so each one that is set becomes
    a labelled sentence in a paragraph after the user's prompt, always in this order::

        <prompt>

        Camera: <camera_motion>. Subject: <subject_animation>. Environment: <environmental_animation>.

    Unset fields are left out (VeoParams already maps blank and "none" to unset); with none set the
    prompt is sent unchanged. A value's own trailing full stop is not doubled.
    """
    sentences = []
    for label, field in _LABELS:
        value: str | None = getattr(params, field)
        text = (value or "").strip().rstrip(".").rstrip()
        if text:
            sentences.append(f"{label}: {text}.")
    if not sentences:
        return prompt
    return f"{prompt.rstrip()}\n\n{' '.join(sentences)}"
