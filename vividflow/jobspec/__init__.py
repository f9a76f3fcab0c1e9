"""The one definition of a video job, shared by the API server, the operator and the runner.

Everything that describes a job lives in this package, and every side imports it from here:

- ``words``: status values, model names, failure reasons (and which are refunded), the runner's exit
  codes;
- ``parameters``: each model's parameters with their defaults and ranges (the API's OpenAPI schema and
  the web app's form are built from them);
- ``spec``: the job spec handed to the runner (in cluster mode also a VideoJob's ``spec``) and the
  runner's result;
- ``videojob``: the VideoJob custom resource, its labels and its status (``crds/`` is generated from it).

Field names are snake_case in Python and camelCase on the wire of the VideoJob resource
(``by_alias=True``).
"""

from vividflow.jobspec.parameters import (
    PARAMS_BY_MODEL,
    VEO_DURATIONS,
    VEO_RESOLUTIONS,
    WAN_FPS,
    WAN_FRAME_COUNTS,
    WAN_MAX_FRAMES,
    WAN_MAX_SIDE,
    WAN_MIN_FRAMES,
    WAN_MIN_SIDE,
    WAN_SIDE_MULTIPLE,
    JobParameters,
    VeoParams,
    WanParams,
    parameter_names,
    parameter_schemas,
)
from vividflow.jobspec.spec import (
    DEFAULT_DEADLINE_SECONDS,
    JobMetrics,
    JobSpec,
    RunResult,
    aware_utc,
)
from vividflow.jobspec.videojob import (
    ANNOTATION_OUTCOME,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_JOB_ID,
    LABEL_MODEL,
    LABEL_OWNER,
    LABEL_VIDEOJOB,
    PLURAL,
    SHORT_NAME,
    VERSION,
    Condition,
    Json,
    Phase,
    VideoJobStatus,
    operator_outcome,
    videojob_manifest,
    videojob_name,
)
from vividflow.jobspec.words import (
    DEFAULT_MODEL,
    NO_RETRY_EXIT_CODES,
    NOT_THE_INPUTS_FAULT,
    TERMINAL_PHASES,
    TERMINAL_STATUSES,
    FailureReason,
    JobStatus,
    ModelName,
    RunnerExit,
    refunds_credit,
)

__all__ = [
    "ANNOTATION_OUTCOME",
    "API_VERSION",
    "DEFAULT_DEADLINE_SECONDS",
    "DEFAULT_MODEL",
    "GROUP",
    "KIND",
    "LABEL_JOB_ID",
    "LABEL_MODEL",
    "LABEL_OWNER",
    "LABEL_VIDEOJOB",
    "NOT_THE_INPUTS_FAULT",
    "NO_RETRY_EXIT_CODES",
    "PARAMS_BY_MODEL",
    "PLURAL",
    "SHORT_NAME",
    "TERMINAL_PHASES",
    "TERMINAL_STATUSES",
    "VEO_DURATIONS",
    "VEO_RESOLUTIONS",
    "VERSION",
    "WAN_FPS",
    "WAN_FRAME_COUNTS",
    "WAN_MAX_FRAMES",
    "WAN_MAX_SIDE",
    "WAN_MIN_FRAMES",
    "WAN_MIN_SIDE",
    "WAN_SIDE_MULTIPLE",
    "Condition",
    "FailureReason",
    "JobMetrics",
    "JobParameters",
    "JobSpec",
    "JobStatus",
    "Json",
    "ModelName",
    "Phase",
    "RunResult",
    "RunnerExit",
    "VeoParams",
    "VideoJobStatus",
    "WanParams",
    "aware_utc",
    "operator_outcome",
    "parameter_names",
    "parameter_schemas",
    "refunds_credit",
    "videojob_manifest",
    "videojob_name",
]
