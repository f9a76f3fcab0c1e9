"""Wan 2.1 image-to-video through diffusers' ``WanImageToVideoPipeline``.

torch and diffusers are imported when a model is loaded, not when this module is imported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from vividflow.jobspec import WAN_FPS, WanParams
from vividflow.logs import adopt_library_loggers
from vividflow.runner.errors import Cancelled, InvalidInput, ModelLoadFailed, OutOfMemory, RunnerError
from vividflow.runner.models.base import (
    CancelCheck,
    GenerationOutput,
    GenerationRequest,
    MonotonicProgress,
    ProgressCallback,
)
from vividflow.runner.models.wan_cache import CachePlan, apply_plan, magcache_ratios
from vividflow.runner.models.wan_lora import set_lora_active
from vividflow.runner.models.wan_setup import (
    WanLoadOptions,
    check_combination,
    flow_shift,
    is_720p,
    set_flow_shift,
    set_up,
)
from vividflow.runner.video import export_mp4
from vividflow.settings import Settings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DENOISE_SHARE = 90
"""Progress reached when the last denoising step ends; VAE decoding and MP4 encoding take the rest."""
DECODED_PROGRESS = 95
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
_MAX_REASON_CHARS = 300
_OFFLINE_MARKERS = (
    "not fully cached locally",
    "Couldn't connect to the Hub",
    "outgoing traffic has been disabled",
)


def pipeline_arguments(prompt: str, params: WanParams, image: Image.Image, device: str) -> dict[str, Any]:
    """How every wan2.1 parameter maps onto ``WanImageToVideoPipeline.__call__``."""
    import torch

    return {
        "image": image,
        "prompt": prompt,
        "negative_prompt": params.negative_prompt,
        "height": params.height,
        "width": params.width,
        "num_frames": params.length,
        "num_inference_steps": params.steps,
        "guidance_scale": params.cfg,
        "generator": torch.Generator(device=device).manual_seed(params.seed),
        "output_type": "np",
    }


class WanModel:
    """A loaded Wan 2.1 I2V pipeline (kept warm between jobs); one generation at a time."""

    def __init__(self, pipe: Any, options: WanLoadOptions, device: str, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._adopt(pipe, options, device)

    def _adopt(self, pipe: Any, options: WanLoadOptions, device: str) -> None:
        """Take ``pipe`` as the warm pipeline: no cache hooks yet, nothing compiled yet."""
        self._pipe = pipe
        self.options = options
        self.device = device
        self.cache_plan = CachePlan()
        self._compiled: set[tuple[int, int, int, bool]] = set()
        self._calls = _ForwardClock(pipe.transformer, device)

    @property
    def source(self) -> str:
        """The Hugging Face id or local directory this pipeline was loaded from."""
        return self.options.source

    @classmethod
    def load(cls, settings: Settings, width: int = 1280, height: int = 720) -> WanModel:
        """Load the checkpoint for a ``width`` x ``height`` job (see :func:`wan_setup.checkpoint_for`).

        Raises :class:`ModelLoadFailed` with a short message naming the source, or
        :class:`OutOfMemory` when the weights do not fit.
        """
        options = WanLoadOptions.from_settings(settings, width, height)
        pipe, device = _load_pipeline(options)
        return cls(pipe, options, device, settings)

    def use_checkpoint_for(self, width: int, height: int) -> None:
        """Make the pipeline the one for a ``width`` x ``height`` job, with its flow shift.

        One pipeline is kept warm: the one loaded last. A job of the other size class (when
        ``VIVID_WAN_MODEL_480P`` and ``_720P`` differ) frees it and loads the other checkpoint, so a
        worker never holds two 14B models; jobs of one size class in a row reuse it.
        """
        options = WanLoadOptions.from_settings(self._settings, width, height)
        if options != self.options:
            logger.info("switching the Wan checkpoint from %s to %s", self.options.source, options.source)
            self._pipe = None
            _free_memory()
            pipe, device = _load_pipeline(options)
            self._adopt(pipe, options, device)
        set_flow_shift(self._pipe, flow_shift(width, height))

    def prepare(self, params: WanParams) -> None:
        """Set the job's preset (the LoRA on or off) and step cache on the warm pipeline."""
        fast = params.preset == "fast"
        if fast and not self.options.lora:
            raise ModelLoadFailed(
                "preset=fast needs VIVID_WAN_LORA (the distilled LoRA) on the runner; it has none"
            )
        if self.options.lora:
            set_lora_active(self._pipe, fast)
        large = is_720p(params.width, params.height)
        wanted = CachePlan.for_job(
            self.options.cache,
            self.options.cache_threshold,
            params.steps,
            magcache_ratios(self.options.magcache_ratios, large),
            fast,
        )
        self.cache_plan = apply_plan(self._pipe.transformer, self.cache_plan, wanted)

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> GenerationOutput:
        """Generate ``request``'s video into ``request.output_path`` at :data:`WAN_FPS`.

        Progress runs 0-90 over the denoising steps, 95 once decoded and 100 once the MP4 is
        written, so the caller need not send the final 100 itself.
        """
        params = request.spec.params
        if not isinstance(params, WanParams):
            raise InvalidInput(f"the Wan model cannot run a {request.spec.model} job")
        progress = MonotonicProgress(on_progress)
        steps = _StepClock()
        with self._lock:
            try:
                _check_cancel(should_cancel)
                self.use_checkpoint_for(params.width, params.height)
                self.prepare(params)
                progress(0)
                image = fit_image(request.image, params.width, params.height)
                gpu = _GpuPeak(self.device)
                graph = (params.width, params.height, params.length, params.preset == "fast")
                first_of_graph = self.options.compile and graph not in self._compiled
                self._calls.start(measure=first_of_graph)
                frames = self._denoise(request.spec.prompt, params, image, progress, should_cancel, steps)
                warmup = self._calls.first_call_excess() if first_of_graph else None
                self._compiled.add(graph)
                progress(DECODED_PROGRESS)
                _check_cancel(should_cancel)
                export_mp4(frames, request.output_path, WAN_FPS)
            except RunnerError:
                self._recover()
                raise
            except Exception as error:
                self._recover()
                doing = f"generating a {params.width}x{params.height}, {params.length}-frame video"
                oom = as_out_of_memory(error, doing)
                if oom is None:
                    raise
                raise oom from None
        progress(100)
        return GenerationOutput(
            local_path=request.output_path,
            step_time=steps.mean(),
            peak_gpu_memory_bytes=gpu.read(),
            warmup_time=warmup,
        )

    def _denoise(
        self,
        prompt: str,
        params: WanParams,
        image: Image.Image,
        progress: MonotonicProgress,
        should_cancel: CancelCheck,
        steps: _StepClock,
    ) -> Any:

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            steps.tick()
            total = pipe.num_timesteps or params.steps
            progress(DENOISE_SHARE * (step + 1) // total)
            _check_cancel(should_cancel)
            return {}

        steps.start()
        output = self._pipe(
            **pipeline_arguments(prompt, params, image, self.device),
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=[],
        )
        return output.frames[0]

    def _recover(self) -> None:
        """After an aborted run: put offloaded modules back and release cached GPU memory."""
        try:
            if self._pipe is not None:
                self._pipe.maybe_free_model_hooks()
        finally:
            _free_memory()


class _StepClock:
    """Mean seconds per denoising step: from one step's end to the next (the first step, which also
    encodes the prompt and image, only counts when it is the only one)."""

    def __init__(self) -> None:
        self._began: float | None = None
        self._ends: list[float] = []

    def start(self) -> None:
        self._began = time.monotonic()

    def tick(self) -> None:
        self._ends.append(time.monotonic())

    def mean(self) -> float | None:
        if len(self._ends) >= 2:
            return round((self._ends[-1] - self._ends[0]) / (len(self._ends) - 1), 4)
        if self._ends and self._began is not None:
            return round(self._ends[0] - self._began, 4)
        return None


class _ForwardClock:
    """Wall time of each transformer call of one generation, when asked to measure (torch forward
    hooks; on CUDA each measured call ends with a synchronize, so the time is the GPU's too)."""

    def __init__(self, transformer: Any, device: str) -> None:
        self._cuda = device.startswith("cuda")
        self._measure = False
        self._began = 0.0
        self.durations: list[float] = []
        transformer.register_forward_pre_hook(self._before)
        transformer.register_forward_hook(self._after)

    def start(self, measure: bool) -> None:
        self._measure = measure
        self.durations = []

    def _before(self, module: Any, args: Any) -> None:
        if self._measure:
            self._began = time.monotonic()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        if not self._measure:
            return
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        self.durations.append(time.monotonic() - self._began)

    def first_call_excess(self) -> float | None:
        """How much longer the first call took than the median of the others: compiling a new graph
        (or, with one call only, None: nothing to compare it with)."""
        if len(self.durations) < 2:
            return None
        rest = sorted(self.durations[1:])
        return round(max(0.0, self.durations[0] - rest[len(rest) // 2]), 4)


class _GpuPeak:
    """Peak GPU memory allocated from now on (None when the model does not run on a CUDA device)."""

    def __init__(self, device: str) -> None:
        import torch

        self._cuda = device.startswith("cuda") and torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated()) if self._cuda else None


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale ``image`` to cover ``width`` x ``height`` keeping its aspect ratio, then crop the centre."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.size == (width, height):
        return rgb
    return ImageOps.fit(rgb, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def as_out_of_memory(error: BaseException, doing: str) -> OutOfMemory | None:
    """The :class:`OutOfMemory` to report for ``error``, or None when it is not a memory failure.

    Covers ``torch.OutOfMemoryError`` (CUDA), ``MemoryError`` and the ``RuntimeError`` of torch's CPU
    allocator ("can't allocate memory").
    """
    import torch

    allocator_failure = isinstance(error, RuntimeError) and any(
        marker in str(error).lower() for marker in _OOM_MARKERS
    )
    if not isinstance(error, MemoryError | torch.OutOfMemoryError) and not allocator_failure:
        return None
    return OutOfMemory(
        f"Out of memory while {doing}; try fewer frames or a smaller size, or enable "
        "VIVID_WAN_OFFLOAD=model or group / VIVID_WAN_VAE_TILING"
    )


def _check_cancel(should_cancel: CancelCheck) -> None:
    if should_cancel():
        raise Cancelled("The job was cancelled during generation")


def _looks_like_path(source: str) -> bool:
    """A local directory rather than a Hugging Face id (``org/name``)."""
    return os.path.isabs(source) or source.startswith((".", "~")) or Path(source).exists()


def _dtypes(device: str) -> dict[str, torch.dtype]:
    """bfloat16 on CUDA with the VAE and image encoder kept in float32 (as diffusers' Wan I2V
    example does, for quality); float32 everywhere on CPU."""
    import torch

    if not device.startswith("cuda"):
        return {"default": torch.float32}
    return {"default": torch.bfloat16, "vae": torch.float32, "image_encoder": torch.float32}


def _load_pipeline(options: WanLoadOptions) -> tuple[Any, str]:
    """Load and set up ``options.source``; returns the pipeline and its device."""
    source = options.source
    check_combination(options)
    if _looks_like_path(source) and not Path(source).expanduser().is_dir():
        raise ModelLoadFailed(f"Wan model directory {source} does not exist")
    try:
        import torch

        adopt_library_loggers(load=True)  # diffusers and transformers log on import already

        from diffusers import WanImageToVideoPipeline

        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = WanImageToVideoPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            str(Path(source).expanduser()) if _looks_like_path(source) else source,
            dtype=_dtypes(device),
        )
        set_up(pipe, device, options)
    except RunnerError:
        raise
    except Exception as error:
        logger.warning("loading the Wan model from %s failed: %s", source, error)
        logger.debug("loading the Wan model failed", exc_info=True)
        oom = as_out_of_memory(error, f"loading the Wan model from {source}")
        if oom is not None:
            raise oom from None
        raise ModelLoadFailed(f"Could not load the Wan model from {source}: {_reason(error)}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _reason(error: BaseException) -> str:
    """The first line of ``error``, shortened; diffusers' wordy offline failure gets a plain one."""
    text = str(error)
    if any(marker in text for marker in _OFFLINE_MARKERS):
        return "it is not in the local Hugging Face cache and could not be downloaded from the Hub"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"
