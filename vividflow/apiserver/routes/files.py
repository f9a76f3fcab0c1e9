"""Embedded mode's result files, at the absolute ``result_url`` the API reports.

The URLs carry the job's random UUID, like a public object URL; they need no API key so that a
browser or video player can open them directly. A result that retention deleted answers 410 Gone.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.errors import gone, not_found
from vividflow.apiserver.schemas import ErrorBody
from vividflow.apiserver.services import retention

router = APIRouter(tags=["results"])
_RESULT_NAME = re.compile(r"^[0-9a-f-]{36}\.mp4$")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {}}, "description": "The MP4 (for HEAD, its headers only)."},
    404: {"model": ErrorBody, "description": "No finished video with this name."},
    410: {"model": ErrorBody, "description": "The video was deleted when its retention period ended."},
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
def result_file(name: str, state: StateDep) -> FileResponse:
    path = state.settings.results_dir / name
    if not _RESULT_NAME.match(name):
        raise not_found("No such result file.")
    if not path.is_file():
        with state.session_factory() as session:
            if retention.is_expired(session, name.removesuffix(".mp4")):
                raise gone("This video was deleted when its retention period ended.")
        raise not_found("No such result file.")
    return FileResponse(path, media_type="video/mp4")
