"""The generate form's fields, derived from the job definition (``jobspec.parameter_schemas``) so
that defaults, ranges and choices are written down once."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from vividflow.jobspec import DEFAULT_MODEL, ModelName, parameter_schemas

SIZE_PRESETS: dict[str, tuple[int, int]] = {"480p": (832, 480), "720p": (1280, 720)}
"""wan2.1's two trained sizes (width, height); other multiples of 16 are typed in."""
_LABELS = {"cfg": "Guidance (cfg)", "duration_seconds": "Duration (seconds)", "length": "Length (frames)"}
_LONG_TEXT = 500
"""Text fields allowing more than this get a text area."""


@dataclass(frozen=True)
class ParamField:
    name: str
    label: str
    widget: str
    """number, select, text or textarea."""
    default: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    step: str | None = None
    choices: tuple[str, ...] = ()
    max_length: int | None = None

    @property
    def input_id(self) -> str:
        return f"param-{self.name}"


def field_text(value: Any) -> str:
    """A parameter value as the form shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _progression_step(values: list[Any]) -> int | None:
    """The step of an arithmetic progression of integers (a long enum shown as a number box)."""
    if len(values) < 3 or not all(isinstance(v, int) for v in values):
        return None
    step = values[1] - values[0]
    return step if all(b - a == step for a, b in itertools.pairwise(values)) else None


def _field(name: str, schema: dict[str, Any]) -> ParamField:
    options = next((o for o in schema.get("anyOf", []) if o.get("type") != "null"), schema)
    kind = options.get("type")
    common: dict[str, Any] = {
        "name": name,
        "label": _LABELS.get(name, name.replace("_", " ").capitalize()),
        "default": field_text(schema.get("default")),
        "description": schema.get("description", ""),
    }
    enum = options.get("enum") or schema.get("enum")
    if enum and (step := _progression_step(enum)) is not None and len(enum) > 8:
        return ParamField(widget="number", minimum=enum[0], maximum=enum[-1], step=str(step), **common)
    if enum:
        return ParamField(widget="select", choices=tuple(field_text(v) for v in enum), **common)
    if kind == "boolean":
        return ParamField(widget="select", choices=("false", "true"), **common)
    if kind in ("integer", "number"):
        step = options.get("multipleOf", 1 if kind == "integer" else "any")
        return ParamField(
            widget="number",
            minimum=options.get("minimum"),
            maximum=options.get("maximum"),
            step=str(step),
            **common,
        )
    max_length = options.get("maxLength")
    widget = "textarea" if max_length is not None and max_length > _LONG_TEXT else "text"
    return ParamField(widget=widget, max_length=max_length, **common)


def model_fields(model: ModelName) -> list[ParamField]:
    return [_field(name, schema) for name, schema in parameter_schemas(model).items()]


def all_model_fields() -> dict[str, list[ParamField]]:
    return {model.value: model_fields(model) for model in ModelName}


def default_model() -> str:
    return DEFAULT_MODEL.value
