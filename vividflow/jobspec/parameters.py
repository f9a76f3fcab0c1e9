"""Each model's parameters, with the defaults and ranges of the public API contract."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from vividflow.jobspec.words import ModelName, Wire

WAN_MIN_SIDE, WAN_MAX_SIDE, WAN_SIDE_MULTIPLE = 16, 1920, 16
WAN_MIN_FRAMES, WAN_MAX_FRAMES = 5, 241
WAN_FRAME_COUNTS = tuple(range(WAN_MIN_FRAMES, WAN_MAX_FRAMES + 1, 4))
"""Every valid ``length``: (length - 1) divisible by 4."""
WAN_FPS = 16
WAN_PRESETS = ("standard", "fast")
"""``standard``: the base model as asked; ``fast``: the distilled LoRA (``VIVID_WAN_LORA``)."""
WAN_DEFAULT_PRESET = "standard"
VEO_DURATIONS = (4, 6, 8)
VEO_RESOLUTIONS = ("720p", "1080p")


_SIDE: dict[str, Any] = {"minimum": WAN_MIN_SIDE, "maximum": WAN_MAX_SIDE, "multipleOf": WAN_SIDE_MULTIPLE}


def _check_wan_side(name: str, value: int) -> int:
    if not WAN_MIN_SIDE <= value <= WAN_MAX_SIDE or value % WAN_SIDE_MULTIPLE:
        raise ValueError(
            f"{name} must be a multiple of {WAN_SIDE_MULTIPLE} between {WAN_MIN_SIDE} and {WAN_MAX_SIDE}"
        )
    return value


class WanParams(Wire):
    """Parameters of ``wan2.1`` (Wan 2.1 image-to-video through diffusers)."""

    negative_prompt: str = Field(
        "blurry, low quality, distorted", max_length=2000, description="What to avoid."
    )
    cfg: float = Field(7.5, ge=1.0, le=20.0, allow_inf_nan=False, description="Guidance scale, 1.0-20.0.")
    width: int = Field(
        1280, description="Output width in pixels: a multiple of 16 within 16-1920.", json_schema_extra=_SIDE
    )
    height: int = Field(
        720, description="Output height in pixels: a multiple of 16 within 16-1920.", json_schema_extra=_SIDE
    )
    length: int = Field(
        81,
        description="Number of frames: 5-241 with (length - 1) divisible by 4.",
        json_schema_extra={
            "minimum": WAN_MIN_FRAMES,
            "maximum": WAN_MAX_FRAMES,
            "x-kubernetes-validations": [
                {"rule": "(self - 1) % 4 == 0", "message": "length - 1 must be divisible by 4"}
            ],
        },
    )
    steps: int = Field(30, ge=1, le=100, description="Diffusion steps, 1-100.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed, 0-4294967295.")
    preset: str = Field(
        WAN_DEFAULT_PRESET,
        description="standard, or fast: the step- and CFG-distilled LoRA the server is configured with "
        "(its own steps and cfg apply unless given). An extension of the API contract.",
        json_schema_extra={"enum": list(WAN_PRESETS)},
    )

    @model_serializer(mode="wrap")
    def _omit_standard_preset(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """The default preset is left out, so a job that does not ask for one is stored, sent to its
        runner and shown exactly as before the parameter existed. (No return annotation: pydantic
        would take it as the serialization schema in place of the fields.)"""
        data: dict[str, Any] = handler(self)
        if data.get("preset") == WAN_DEFAULT_PRESET:
            del data["preset"]
        return data

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in WAN_PRESETS:
            raise ValueError(f"preset must be one of: {', '.join(WAN_PRESETS)}")
        return value

    @field_validator("width", "height")
    @classmethod
    def _side(cls, value: int, info: Any) -> int:
        return _check_wan_side(info.field_name, value)

    @field_validator("length")
    @classmethod
    def _length(cls, value: int) -> int:
        if value not in WAN_FRAME_COUNTS:
            raise ValueError(
                f"length must be between {WAN_MIN_FRAMES} and {WAN_MAX_FRAMES} with (length - 1) "
                "divisible by 4 (e.g. 5, 9, 81)"
            )
        return value


class VeoParams(Wire):
    """Parameters of ``veo3.1`` (Google Veo 3.1 on Vertex AI)."""

    duration_seconds: int = Field(
        4, description="Video length in seconds: 4, 6 or 8.", json_schema_extra={"enum": list(VEO_DURATIONS)}
    )
    resolution: str = Field(
        "720p", description="720p or 1080p.", json_schema_extra={"enum": list(VEO_RESOLUTIONS)}
    )
    camera_motion: str | None = Field(
        None, max_length=200, description="Camera movement, folded into the prompt."
    )
    subject_animation: str | None = Field(
        None, max_length=200, description="Subject motion, folded into the prompt."
    )
    environmental_animation: str | None = Field(
        None, max_length=200, description="Environmental effects, folded into the prompt."
    )
    enhance_prompt: bool = Field(False, description="Let Veo rewrite the prompt.")

    @field_validator("duration_seconds")
    @classmethod
    def _duration(cls, value: int) -> int:
        if value not in VEO_DURATIONS:
            raise ValueError("duration_seconds must be 4, 6, or 8")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        if value not in VEO_RESOLUTIONS:
            raise ValueError("resolution must be 720p or 1080p")
        return value

    @field_validator("camera_motion", "subject_animation", "environmental_animation")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "none":
            return None
        return value.strip()


PARAMS_BY_MODEL: dict[ModelName, type[WanParams] | type[VeoParams]] = {
    ModelName.WAN21: WanParams,
    ModelName.VEO31: VeoParams,
}


def parameter_names(model: ModelName) -> frozenset[str]:
    return frozenset(PARAMS_BY_MODEL[model].model_fields)


def parameter_schemas(model: ModelName) -> dict[str, Any]:
    """The model's parameters as JSON Schema properties of a request's fields (the API's OpenAPI
    document and the web app's form are both built from this)."""
    schema = PARAMS_BY_MODEL[model].model_json_schema(by_alias=False)
    properties: dict[str, Any] = {}
    for name, field in schema["properties"].items():
        field = {k: v for k, v in field.items() if k not in ("title", "x-kubernetes-validations")}
        if name == "length":
            field["enum"] = list(WAN_FRAME_COUNTS)  # (length - 1) % 4 == 0, which JSON Schema cannot say
        properties[name] = field
    return properties


class JobParameters(Wire):
    """Exactly one section, the one of the job's model, is set."""

    wan: WanParams | None = None
    veo: VeoParams | None = None

    @classmethod
    def for_model(cls, model: ModelName, values: dict[str, Any], *, strict: bool = False) -> JobParameters:
        """Validate ``values`` as ``model``'s parameters (raises pydantic's ValidationError); ``strict``:
        no type conversions (values already have their field's type)."""
        if model is ModelName.WAN21:
            return cls(wan=WanParams.model_validate(values, strict=strict))
        return cls(veo=VeoParams.model_validate(values, strict=strict))

    def of(self, model: ModelName) -> WanParams | VeoParams:
        section = self.wan if model is ModelName.WAN21 else self.veo
        if section is None:
            raise ValueError(f"no parameters for model {model}")
        return section
