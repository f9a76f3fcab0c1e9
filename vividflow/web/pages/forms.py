"""Reading the pages' small url-encoded forms (their size is already bounded by the body guard)."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from vividflow.apiserver.errors import ApiError

MAX_FIELDS = 20
MAX_FIELD_BYTES = 16 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The form's text fields (the first of repeated names); files are refused."""
    try:
        async with request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES) as form:
            fields: dict[str, str] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    raise ApiError(400, "Invalid form", [f"{key} must be a text field"])
                fields.setdefault(key, value)
            return fields
    except ApiError:
        raise
    except Exception as error:  # the form parser's refusals (too many fields, malformed body)
        raise ApiError(400, "Invalid form", [str(getattr(error, "detail", error))]) from None
