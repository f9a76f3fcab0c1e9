"""Wan 2.1 I2V-14B on one GPU: seconds per step, end to end and peak GPU memory of each option the
runner has, against the plain bf16 baseline measured in the same run.

    python bench/wan_gpu.py [--steps 8] [--sizes 480p,720p] [--frames 81] [--options all]

It builds the real architecture (transformer, UMT5-XXL, CLIP ViT-H/14, VAE: bench/wan_gpu_build.py)
with random weights directly on the GPU and generates one 832x480 and one 1280x720 video of 81 frames
per option, at N steps with CFG (two transformer passes a step), through the runner's own set-up code
(vividflow.runner.models.wan_setup, wan_cache). Options, each alone:

- ``attention:NAME``: every diffusers attention backend whose kernel is installed here;
- ``first_block`` and ``magcache``: step caching at the runner's default thresholds (0.05, 0.12);
- ``compile``: regional compile of the 40 blocks; its compile (the first pass's excess) is reported
  apart, as the runner reports it in spin_up_time, and left out of the end-to-end figure;
- ``compile+attention:BEST``: the compile with the fastest backend measured before it;
- ``fp8_storage``: diffusers' layerwise casting (fp8 weights, bf16 compute: memory, not speed);
- ``fp8_torchao``: torchao's fp8 compute, when torchao is installed;
- ``fast``: the fast preset as the runner runs it, 4 steps without CFG with a LightX2V-shaped random
  LoRA (rank 64), against the baseline's 40-step estimate (its end to end with 40 steps in place of N).

Random weights make the speed real and the pictures noise. MagCache's skips follow its calibrated
ratios alone, so its speed-up is the real one; First Block Cache's follow the outputs, which random
weights do not represent. The quality of caching and of the distilled preset is not measured here:
see their papers. Without CUDA the same code runs at the tests' tiny size, and says so.
Prints a table per size, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.wan_gpu_build import build_pipeline, build_transformer, parameter_count  # noqa: E402
from tests.fixtures.tiny_wan import TINY_LORA_TARGETS  # noqa: E402
from vividflow.runner.errors import ModelLoadFailed  # noqa: E402
from vividflow.runner.models.wan_cache import (  # noqa: E402
    FIRST_BLOCK_THRESHOLD,
    MAGCACHE_THRESHOLD,
    CachePlan,
    apply_plan,
    magcache_ratios,
)
from vividflow.runner.models.wan_setup import check_attention_backend, flow_shift, set_flow_shift  # noqa: E402

SIZES = {"480p": (832, 480), "720p": (1280, 720)}
TINY_SIZES = {"480p": (32, 32), "720p": (48, 32)}
BACKENDS = ("flash", "_flash_3", "sage", "xformers", "_native_cudnn", "_native_flash")
"""Tried in turn; the ones whose kernel is not installed are reported as skipped. (``flex`` is left
out: uncompiled, diffusers runs it far slower than the baseline; ``_native_efficient`` too.)"""
CFG = 5.0
FAST_STEPS, FAST_CFG, FAST_RANK = 4, 1.0, 64
REFERENCE_STEPS = 40
PROMPT = "Waves roll onto a beach at sunset, the camera slowly pans right"


@dataclass
class Run:
    option: str
    size: str
    steps: int
    step_s: float | None = None
    end_to_end_s: float | None = None
    warmup_s: float | None = None
    peak_gpu_bytes: int | None = None
    passes: str = ""
    error: str = ""


class Clock:
    """Step ends (callback) and transformer passes (forward hooks), synchronised on CUDA."""

    def __init__(self, pipe: Any, cuda: bool) -> None:
        self.cuda, self.steps, self.passes, self.blocks = cuda, [], [], 0
        self._began = 0.0
        pipe.transformer.register_forward_pre_hook(self._before)
        pipe.transformer.register_forward_hook(self._after)

    def count_blocks(self, pipe: Any) -> Any:
        """Count the runs of the last block's feed-forward (a cached pass skips it); returns the
        handle to remove (hooks inside compiled blocks would not run)."""
        return pipe.transformer.blocks[-1].ffn.register_forward_hook(self._block)

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset(self) -> None:
        self.steps, self.passes, self.blocks = [], [], 0

    def _before(self, module: Any, args: Any) -> None:
        self._began = self.now()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        self.passes.append(self.now() - self._began)

    def _block(self, module: Any, args: Any, output: Any) -> None:
        self.blocks += 1

    def on_step(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.steps.append(self.now())
        return {}


def generate(pipe: Any, clock: Clock, run: Run, size: tuple[int, int], frames: int, cfg: float) -> Run:
    width, height = size
    set_flow_shift(pipe, flow_shift(*SIZES[run.size]))
    if clock.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock.reset()
    started = clock.now()
    pipe(
        image=Image.linear_gradient("L").resize(size).convert("RGB"),
        prompt=PROMPT,
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=run.steps,
        guidance_scale=cfg,
        generator=torch.Generator(device="cpu").manual_seed(42),
        output_type="np",
        callback_on_step_end=clock.on_step,
        callback_on_step_end_tensor_inputs=[],
    )
    ended = clock.now()
    ends = clock.steps
    run.step_s = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else None
    rest = sorted(clock.passes[1:])
    run.warmup_s = max(0.0, clock.passes[0] - rest[len(rest) // 2]) if rest else None
    run.end_to_end_s = ended - started - (run.warmup_s or 0.0)
    run.peak_gpu_bytes = int(torch.cuda.max_memory_allocated()) if clock.cuda else None
    passes = len(clock.passes)
    run.passes = f"{clock.blocks}/{passes} passes ran the blocks" if clock.blocks else ""
    return run


Setup = Callable[[Any, str, int], Callable[[], None] | None]
"""(pipe, size, steps) -> how to undo it (None: the transformer is rebuilt afterwards)."""


def attention(name: str) -> Setup:
    def setup(pipe: Any, size: str, steps: int) -> Callable[[], None]:
        check_attention_backend(name)
        pipe.transformer.set_attention_backend(name)
        # Not reset_attention_backend(): it leaves diffusers' process-wide active backend as it was.
        return lambda: pipe.transformer.set_attention_backend("native")

    return setup


def cache(kind: str, clock: Clock) -> Setup:
    def setup(pipe: Any, size: str, steps: int) -> Callable[[], None]:
        threshold = MAGCACHE_THRESHOLD if kind == "magcache" else FIRST_BLOCK_THRESHOLD
        plan = CachePlan.for_job(kind, threshold, steps, magcache_ratios((), size == "720p"), fast=False)
        apply_plan(pipe.transformer, CachePlan(), plan)
        counting = clock.count_blocks(pipe)

        def undo() -> None:
            counting.remove()
            apply_plan(pipe.transformer, plan, CachePlan())

        return undo

    return setup


def compiled(backend: str | None) -> Setup:
    def setup(pipe: Any, size: str, steps: int) -> None:
        if backend:
            attention(backend)(pipe, size, steps)
        pipe.transformer.compile_repeated_blocks(fullgraph=True)

    return setup


def fp8_storage(pipe: Any, size: str, steps: int) -> None:
    compute = pipe.transformer.dtype
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)


def fp8_torchao(pipe: Any, size: str, steps: int) -> None:
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    except ImportError:
        raise RuntimeError("torchao is not installed (diffusers' TorchAoConfig needs it)") from None
    quantize_(pipe.transformer, Float8DynamicActivationFloat8WeightConfig())


def fast_preset(pipe: Any, size: str, steps: int) -> Callable[[], None]:
    from peft import LoraConfig

    config = LoraConfig(r=FAST_RANK, lora_alpha=FAST_RANK, target_modules=list(TINY_LORA_TARGETS))
    pipe.transformer.add_adapter(config, adapter_name="fast")
    return pipe.transformer.unload_lora  # type: ignore[no-any-return]


def one_run(
    pipe: Any, clock: Clock, setup: Setup | None, run: Run, size: tuple[int, int], frames: int, cfg: float
) -> None:
    """``setup`` (if any) for this size, the generation, then its undo."""
    undo = setup(pipe, run.size, run.steps) if setup is not None else None
    try:
        generate(pipe, clock, run, size, frames, cfg)
    finally:
        if undo is not None:
            undo()


def millions(module: Any) -> str:
    return f"{parameter_count(module) / 1e6:,.1f} M"


def attempt(action: Callable[..., Any], *args: Any) -> str:
    """``action(*args)``; the first line of its failure, or "" (an option not available here)."""
    try:
        action(*args)
    except (ModelLoadFailed, RuntimeError, ImportError, ValueError, TypeError) as error:
        return str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return ""


def measure_all(args: argparse.Namespace, full: bool, device: str) -> list[Run]:
    cuda = device.startswith("cuda")
    sizes = SIZES if full else TINY_SIZES
    frames = args.frames if full else 9
    pipe = build_pipeline(full, device)
    clock = Clock(pipe, cuda)
    print(
        f"  built: transformer {millions(pipe.transformer)}, text encoder {millions(pipe.text_encoder)},"
        f" image encoder {millions(pipe.image_encoder)}, VAE {millions(pipe.vae)} parameters"
    )
    generate(pipe, clock, Run("warm-up", "480p", 1), sizes["480p"], 5, CFG)  # CUDA context, kernels
    runs: list[Run] = []

    def best_backend() -> str | None:
        timed = [r for r in runs if r.option.startswith("attention:") and r.step_s and r.size == "480p"]
        return min(timed, key=lambda r: r.step_s or 0).option.split(":", 1)[1] if timed else None

    options: list[tuple[str, Callable[[], Setup], bool]] = [("baseline", lambda: lambda *a: None, False)]
    options += [(f"attention:{name}", lambda name=name: attention(name), False) for name in BACKENDS]
    options += [
        ("first_block", lambda: cache("first_block", clock), False),
        ("magcache", lambda: cache("magcache", clock), False),
    ]
    options += [("fast", lambda: fast_preset, False), ("compile", lambda: compiled(None), True)]
    options += [("compile+best_attention", lambda: compiled(best_backend()), True)]
    options += [("fp8_storage", lambda: fp8_storage, True), ("fp8_torchao", lambda: fp8_torchao, True)]
    wanted = set(args.options.split(",")) if args.options != "all" else None
    for option, make, rebuild in options:
        if wanted is not None and option not in wanted and option.split(":")[0] not in wanted:
            continue
        fast = option == "fast"
        setup, failed = make(), ""
        if rebuild:  # set once for both sizes (the second one recompiles: its own warm-up)
            failed = attempt(setup, pipe, "480p", args.steps)
        for size in args.sizes.split(","):
            run = Run(option, size, FAST_STEPS if fast else args.steps)
            cfg = FAST_CFG if fast else CFG
            run.error = failed or attempt(
                one_run, pipe, clock, None if rebuild else setup, run, sizes[size], frames, cfg
            )
            if option == "compile+best_attention" and run.error == "" and best_backend() is None:
                run.option = "compile (no other backend)"
            runs.append(run)
            print(f"  {size} {run.option}: " + (run.error or f"{run.step_s or 0:.3f} s/step"), flush=True)
        if rebuild:  # compile and fp8 change the transformer for good: a fresh one for the next option
            pipe.transformer = None
            torch._dynamo.reset()
            if cuda:
                torch.cuda.empty_cache()
            pipe.transformer = build_transformer(full, device)
            clock = Clock(pipe, cuda)
    return runs


def report(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {"sizes": {}}
    for size in args.sizes.split(","):
        here = [r for r in runs if r.size == size]
        base = next((r for r in here if r.option == "baseline" and r.step_s), None)
        print(f"\n{size}: option{'':22} s/step  x base  end-to-end  x base  peak GiB  notes")
        for run in here:
            if run.error:
                print(f"  {run.option:28} skipped: {run.error}")
                continue
            step_x = base.step_s / run.step_s if base and base.step_s and run.step_s else None
            e2e_x = (
                base.end_to_end_s / run.end_to_end_s
                if base and base.end_to_end_s and run.end_to_end_s
                else None
            )
            peak = f"{run.peak_gpu_bytes / 1024**3:8.1f}" if run.peak_gpu_bytes else "     n/a"
            notes = [run.passes] if run.passes else []
            if run.warmup_s and run.warmup_s > (run.step_s or 0):
                notes.append(f"compile/warm-up {run.warmup_s:.1f} s (spin_up_time)")
            if run.option == "fast":
                notes.append(f"{FAST_STEPS} steps, cfg {FAST_CFG}")
            print(
                f"  {run.option:28} {run.step_s or 0:7.3f}  {step_x or 0:5.2f}x  {run.end_to_end_s or 0:9.2f}"
                f"  {e2e_x or 0:5.2f}x  {peak}  {'; '.join(notes)}"
            )
        entry: dict[str, Any] = {"runs": [asdict(r) for r in here]}
        fast = next((r for r in here if r.option == "fast" and r.end_to_end_s), None)
        if base and base.step_s and base.end_to_end_s and fast and fast.end_to_end_s:
            estimate = base.end_to_end_s + (REFERENCE_STEPS - base.steps) * base.step_s
            entry["baseline_40_step_estimate_s"] = round(estimate, 2)
            entry["fast_vs_40_step_baseline"] = round(estimate / fast.end_to_end_s, 2)
            print(
                f"  fast preset: {fast.end_to_end_s:.2f} s end to end against the baseline's"
                f" {REFERENCE_STEPS}-step CFG estimate {estimate:.2f} s: {estimate / fast.end_to_end_s:.1f}x"
            )
        timed = [r for r in here if r.step_s and not r.error and r.option not in ("fast", "baseline")]
        if base and base.step_s and timed:
            best = min(timed, key=lambda r: r.step_s or 0)
            entry["best_per_step"] = {
                "option": best.option,
                "ratio": round(base.step_s / (best.step_s or 1), 2),
            }
            print(f"  best per step: {best.option}, {base.step_s / (best.step_s or 1):.2f}x the baseline")
        summary["sizes"][size] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="steps of every run but the fast preset's")
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--frames", type=int, default=81, help="frames at the full size (tiny: 9)")
    parser.add_argument(
        "--options", default="all", help="comma-separated option names (e.g. baseline,compile)"
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny model even when CUDA is available")
    args = parser.parse_args()
    full = torch.cuda.is_available() and not args.tiny
    device = "cuda" if full else "cpu"
    if full:
        memory = torch.cuda.get_device_properties(0).total_memory / 1024**3
        where = f"{torch.cuda.get_device_name()} ({memory:.0f} GiB)"
        print(f"Wan 2.1 I2V-14B architecture, random weights in bf16, on {where}")
    else:
        torch.set_num_threads(1)
        where = "CPU"
        print(
            "NO GPU HERE: the same code at the tests' tiny size on the CPU;"
            " these figures say nothing about a GPU"
        )
    print(
        f"  {args.steps} steps, cfg {CFG} (two passes a step), torch {torch.__version__}; random weights:"
        " the speed is real, the pictures are noise"
    )
    started = time.perf_counter()
    runs = measure_all(args, full, device)
    summary = report(runs, args)
    summary.update(
        device=where,
        full_size=full,
        steps=args.steps,
        cfg=CFG,
        wall_s=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
