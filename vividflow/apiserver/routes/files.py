"""Embedded mode's result files, at the absolute ``result_url`` the API reports.

The URLs carry the job's random UUID, like a public object URL; they need no API key so that a
browser or video player can open them directly.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from vividflow.apiserver.deps import SettingsDep
from vividflow.apiserver.errors import not_found
from vividflow.apiserver.schemas import ErrorBody

router = APIRouter(tags=["results"])
_RESULT_NAME = re.compile(r"^[0-9a-f-]{36}\.mp4$")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {}}, "description": "The MP4 (for HEAD, its headers only)."},
    404: {"model": ErrorBody, "description": "No finished video with this name."},
}


@router.get(
    "/files/results/{name}",
    summary="Download a finished video (embedded mode)",
    response_class=FileResponse,
    responses=_RESPONSES,
)
@router.head(
    "/files/results/{name}",
    summary="A finished video's size and type, without its content (embedded mode)",
    operation_id="result_file_head",
    response_class=FileResponse,
    responses=_RESPONSES,
)
def result_file(name: str, settings: SettingsDep) -> FileResponse:
    path = settings.results_dir / name
    if not _RESULT_NAME.match(name) or not path.is_file():
        raise not_found("No such result file.")
    return FileResponse(path, media_type="video/mp4")
