"""Reading ``POST /generate``: JSON, urlencoded or multipart bodies, checked against the model's
own parameters, every problem reported at once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from vividflow.apiserver.errors import ApiError, format_validation_errors, invalid_parameters
from vividflow.jobspec import DEFAULT_MODEL, JobParameters, ModelName, parameter_names

MAX_PROMPT_LENGTH = 2000
COMMON_FIELDS = frozenset({"prompt", "model", "image", "image_url"})
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class GenerateInput:
    prompt: str
    model: ModelName
    parameters: JobParameters
    image_url: str | None
    upload: UploadFile | None


async def read_generate_input(request: Request) -> GenerateInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: UploadFile | None = None
    if content_type == "application/json":
        fields = await _json_fields(request)
    elif content_type in FORM_TYPES:
        fields, upload = await _form_fields(request)
    else:
        raise ApiError(
            415,
            "Unsupported content type",
            ["Send multipart/form-data, application/x-www-form-urlencoded or application/json."],
        )
    return validate_fields(fields, upload)


async def _json_fields(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise invalid_parameters(["The request body is not valid JSON."]) from None
    if not isinstance(payload, dict):
        raise invalid_parameters(["The JSON body must be an object."])
    if "image" in payload:
        raise invalid_parameters(
            ["image must be uploaded as a file (multipart/form-data); in JSON, use image_url."]
        )
    return {key: value for key, value in payload.items() if value is not None}


async def _form_fields(request: Request) -> tuple[dict[str, Any], UploadFile | None]:
    form = await request.form(max_files=2, max_fields=100)
    fields: dict[str, Any] = {}
    upload: UploadFile | None = None
    problems: list[str] = []
    for key, value in form.multi_items():
        if key in fields or (key == "image" and upload is not None):
            problems.append(f"{key} is given more than once")
        elif isinstance(value, UploadFile):
            if key == "image":
                upload = value
            else:
                problems.append(f"{key} must be a text field, not a file")
        elif key == "image":
            problems.append("image must be a file upload; to pass a link, use image_url")
        elif value != "":  # an empty form field means "not given", as browsers send them
            fields[key] = value
    if problems:
        raise invalid_parameters(problems)
    return fields, upload


def validate_fields(fields: dict[str, Any], upload: UploadFile | None) -> GenerateInput:
    problems: list[str] = []

    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("prompt is required")
        prompt = ""
    elif len(prompt) > MAX_PROMPT_LENGTH:
        problems.append(f"prompt must be at most {MAX_PROMPT_LENGTH} characters")

    model: ModelName | None = DEFAULT_MODEL
    if "model" in fields:
        try:
            model = ModelName(fields["model"])
        except ValueError:
            problems.append(f"model must be one of: {', '.join(m.value for m in ModelName)}")
            model = None

    image_url = fields.get("image_url")
    if image_url is not None and not isinstance(image_url, str):
        problems.append("image_url must be a string")
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
        try:
            parameters = JobParameters.for_model(model, {k: v for k, v in fields.items() if k in own})
        except ValidationError as error:
            problems.extend(format_validation_errors(error))

    if problems or model is None or parameters is None:
        raise invalid_parameters(problems)
    return GenerateInput(
        prompt=prompt.strip(), model=model, parameters=parameters, image_url=image_url or None, upload=upload
    )
