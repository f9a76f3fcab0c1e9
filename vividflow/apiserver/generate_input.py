"""Reading ``POST /generate``: JSON, urlencoded or multipart bodies, checked against the model's
own parameters, every problem reported at once.

Parsing is as strict as the contract: integers are decimal digits (``16``, not ``1_6``, `` 16 `` or
``16.0``), numbers are finite decimals, booleans are ``true``/``false`` (any case) or JSON booleans,
and a JSON boolean is never a number. Each refusal names the field and the rule. The body's size and
read time are bounded before this module sees it (:mod:`body_limits`).
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from vividflow.apiserver.errors import ApiError, format_validation_errors, invalid_parameters
from vividflow.apiserver.services.submit import JobRequest
from vividflow.apiserver.services.webhooks import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS
from vividflow.jobspec import (
    DEFAULT_MODEL,
    PARAMS_BY_MODEL,
    JobParameters,
    JobSpec,
    ModelName,
    parameter_names,
)
from vividflow.settings import Settings
from vividflow.storage import fetch
from vividflow.storage.errors import FetchRefused

MAX_PROMPT_LENGTH: int = next(
    int(rule.max_length) for rule in JobSpec.model_fields["prompt"].metadata if hasattr(rule, "max_length")
)
COMMON_FIELDS = frozenset({"prompt", "model", "image", "image_url", "webhook_url", "webhook_events"})
MAX_WEBHOOK_URL_LENGTH = 2048
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_FORM_FIELDS = 100
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_PART_TOO_LARGE = "Part exceeded maximum size"


@dataclass(frozen=True)
class GenerateInput:
    job: JobRequest
    """What the job is to do, for services.submit."""
    image_url: str | None
    upload: bytes | None
    """The uploaded image's bytes (at most ``max_upload_bytes + 1``: one more tells it is too large)."""


async def read_generate_input(request: Request, settings: Settings) -> GenerateInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: bytes | None = None
    if content_type == "application/json":
        fields = await _json_fields(request)
    elif content_type in FORM_TYPES:
        fields, upload = await read_form_fields(request, settings)
    else:
        raise ApiError(
            415,
            "Unsupported content type",
            ["Send multipart/form-data, application/x-www-form-urlencoded or application/json."],
        )
    return validate_fields(fields, upload, settings)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid_parameters(["The request body is not valid JSON."]) from None
    except RecursionError:
        raise invalid_parameters(["The JSON body is nested too deeply."]) from None
    if not isinstance(payload, dict):
        raise invalid_parameters(["The JSON body must be an object."])
    return payload


async def _json_fields(request: Request) -> dict[str, Any]:
    payload = parse_json_object(await request.body())
    if "image" in payload:
        raise invalid_parameters(
            ["image must be uploaded as a file (multipart/form-data); in JSON, use image_url."]
        )
    return {key: value for key, value in payload.items() if value is not None}


async def read_form_fields(request: Request, settings: Settings) -> tuple[dict[str, Any], bytes | None]:
    fields: dict[str, Any] = {}
    upload: bytes | None = None
    problems: list[str] = []
    try:
        form_context = request.form(
            max_files=2, max_fields=MAX_FORM_FIELDS, max_part_size=settings.max_form_field_bytes
        )
        async with form_context as form:  # closes (and deletes) spooled uploads on the way out
            for key, value in form.multi_items():
                if key in fields or (key == "image" and upload is not None):
                    problems.append(f"{key} is given more than once")
                elif isinstance(value, UploadFile):
                    if key == "image" and not value.filename and not value.size:
                        continue  # a file input left empty: browsers send it as an empty, unnamed file
                    if key == "image":
                        upload = await value.read(settings.max_upload_bytes + 1)
                    else:
                        problems.append(f"{key} must be a text field, not a file")
                elif key == "image":
                    problems.append("image must be a file upload; to pass a link, use image_url")
                elif value != "":  # an empty form field means "not given", as browsers send them
                    fields[key] = value
    except StarletteHTTPException as error:  # the form parser's refusals
        detail = str(error.detail)
        if detail.startswith(_PART_TOO_LARGE):
            raise ApiError(
                413,
                "Request too large",
                [f"A form field is larger than the limit of {settings.max_form_field_bytes} bytes."],
            ) from None
        raise ApiError(400, "Invalid request body", [detail]) from None
    if problems:
        raise invalid_parameters(problems)
    return fields, upload


# ---------------------------------------------------------------------------------------------------
# Field types: the wire rules for each parameter's Python type
# ---------------------------------------------------------------------------------------------------


def _field_type(annotation: Any) -> type:
    """``int``, ``float``, ``bool`` or ``str`` (``X | None`` counts as ``X``)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _field_type(inner)
    assert annotation in (int, float, bool, str), annotation
    return typing.cast(type, annotation)


def parse_value(name: str, kind: type, value: Any) -> tuple[Any, str | None]:
    """(the value as ``kind``, None) or (None, the problem): form values arrive as text, JSON values
    as JSON types; both follow the same rules."""
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true", None
        return None, f"{name} must be true or false"
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            return int(value), None
        return None, f"{name} must be a whole number written with digits only (e.g. 16)"
    if kind is float:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        number = float(value) if numeric or (isinstance(value, str) and _DECIMAL.fullmatch(value)) else None
        if number is None or not math.isfinite(number):
            return None, f"{name} must be a finite decimal number (e.g. 7.5)"
        return number, None
    if isinstance(value, str):
        return value, None
    return None, f"{name} must be text"


def _parse_parameters(model: ModelName, fields: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, info in PARAMS_BY_MODEL[model].model_fields.items():
        if name not in fields:
            continue
        value, problem = parse_value(name, _field_type(info.annotation), fields[name])
        if problem:
            problems.append(problem)
        else:
            values[name] = value
    return values, problems


def apply_wan_preset(parameters: JobParameters, settings: Settings) -> tuple[JobParameters, list[str]]:
    """``preset=fast`` (an extension of the contract): refused while the server has no distilled LoRA;
    otherwise the preset's steps and cfg fill in whichever of the two the request did not give, so
    the job record holds what the runner will run. A request that gives them keeps its own."""
    wan = parameters.wan
    if wan is None or wan.preset != "fast":
        return parameters, []
    if not settings.wan_lora.strip():
        return parameters, [
            "preset fast is not available on this server: no distilled LoRA is configured "
            "(VIVID_WAN_LORA); use preset standard"
        ]
    defaults = {"steps": settings.wan_fast_steps, "cfg": settings.wan_fast_cfg}
    update = {name: value for name, value in defaults.items() if name not in wan.model_fields_set}
    return JobParameters(wan=wan.model_copy(update=update)), []


def parse_webhook_events(value: Any) -> tuple[tuple[str, ...] | None, list[str]]:
    """``start,completed`` or ``["start", "completed"]`` (a JSON array, or its text in a form): the
    events in their canonical order, or the problems."""
    names: Any = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                names = json.loads(text)
            except ValueError:
                names = None
        else:
            names = [name.strip() for name in text.split(",")] if text else []
    choices = ", ".join(WEBHOOK_EVENTS)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None, [f"webhook_events must be a comma-separated list or a JSON array of: {choices}"]
    problems = [
        f"webhook_events: unknown event {name!r}; use {choices}"
        for name in names
        if name not in WEBHOOK_EVENTS
    ]
    if not names:
        problems.append(f"webhook_events must name at least one of: {choices}")
    if problems:
        return None, problems
    return tuple(event for event in WEBHOOK_EVENTS if event in names), []


def _parse_webhook(
    fields: dict[str, Any], settings: Settings
) -> tuple[str | None, tuple[str, ...] | None, list[str]]:
    """(webhook_url, webhook_events, problems). The URL is vetted here without DNS (scheme, host, no
    internal names or private literal addresses); every delivery vets what it resolves to."""
    problems: list[str] = []
    url = fields.get("webhook_url")
    if url is not None and not isinstance(url, str):
        problems.append("webhook_url must be text (an https URL)")
        url = None
    elif url is not None and len(url) > MAX_WEBHOOK_URL_LENGTH:
        problems.append(f"webhook_url must be at most {MAX_WEBHOOK_URL_LENGTH} characters")
    elif url is not None:
        try:
            fetch.check_url(url, settings, noun="webhook URL")
        except FetchRefused as error:
            problems.append(f"webhook_url: {error.message}")
    events: tuple[str, ...] | None = None
    if "webhook_events" in fields:
        events, event_problems = parse_webhook_events(fields["webhook_events"])
        problems.extend(event_problems)
        if "webhook_url" not in fields:
            problems.append("webhook_events needs webhook_url")
    if url is None:
        return None, None, problems
    return url, events or DEFAULT_WEBHOOK_EVENTS, problems


def read_prompt(value: Any) -> tuple[str, str | None]:
    """A request's prompt, and what is wrong with it (None when nothing): required text within
    the job's length limit."""
    if not isinstance(value, str) or not value.strip():
        return "", "prompt is required (text)"
    if len(value) > MAX_PROMPT_LENGTH:
        return value, f"prompt must be at most {MAX_PROMPT_LENGTH} characters"
    return value, None


def validate_fields(fields: dict[str, Any], upload: bytes | None, settings: Settings) -> GenerateInput:
    problems: list[str] = []

    prompt, problem = read_prompt(fields.get("prompt"))
    if problem is not None:
        problems.append(problem)

    model: ModelName | None = DEFAULT_MODEL
    if "model" in fields:
        try:
            model = ModelName(fields["model"])
        except ValueError:
            problems.append(f"model must be one of: {', '.join(m.value for m in ModelName)}")
            model = None

    image_url = fields.get("image_url")
    if image_url is not None and not isinstance(image_url, str):
        problems.append("image_url must be text (a URL)")
        image_url = None
    if upload is None and not image_url:
        problems.append("an input image is required: upload a file as image or give image_url")
    elif upload is not None and image_url:
        problems.append("give either an image file or image_url, not both")

    all_parameters = frozenset().union(*(parameter_names(m) for m in ModelName))
    for key in sorted(set(fields) - COMMON_FIELDS - all_parameters):
        problems.append(f"unknown parameter: {key}")

    parameters: JobParameters | None = None
    if model is not None:
        own = parameter_names(model)
        for key in sorted((set(fields) & all_parameters) - own):
            owner = next(m for m in ModelName if key in parameter_names(m))
            problems.append(f"{key} is a {owner} parameter; it is not accepted with model {model}")
        values, type_problems = _parse_parameters(model, fields)
        problems.extend(type_problems)
        try:
            parameters = JobParameters.for_model(model, values, strict=True)
        except ValidationError as error:
            problems.extend(format_validation_errors(error))
        else:
            parameters, preset_problems = apply_wan_preset(parameters, settings)
            problems.extend(preset_problems)

    webhook_url, webhook_events, webhook_problems = _parse_webhook(fields, settings)
    problems.extend(webhook_problems)

    if problems or model is None or parameters is None:
        raise invalid_parameters(problems)
    job = JobRequest(
        model=model,
        prompt=prompt.strip(),
        parameters=parameters,
        webhook_url=webhook_url,
        webhook_events=webhook_events,
    )
    return GenerateInput(job=job, image_url=image_url or None, upload=upload)
