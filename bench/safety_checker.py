"""What SD_SAFETY_CHECKER adds to a CPU job: the checker's seconds per image against the image's.

Side by side in one process, taking turns: one 512x512 image on the worker's default path
(`SD_DTYPE=auto`, the SD VAE decoder; the sd-turbo architecture with random weights,
bench/sd_turbo_arch.py), and the worker's own `SafetyChecker` on 1 and 4 such images. The
checker has the architecture of CompVis/stable-diffusion-safety-checker (CLIP ViT-L/14 vision
tower and projection) with random weights, saved and loaded the way the worker loads it; random
weights cost the same arithmetic as trained ones. Median of RUNS after a warm-up.

Run: `python bench/safety_checker.py` (about 3 minutes on two EPYC cores).
"""

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from machine import cpu_line
from sd_turbo_arch import build_sd_turbo
from transformers import CLIPConfig, CLIPImageProcessor

from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.optimize import prepare_pipeline, resolve_dtype
from sd_webui.worker.pipeline import LoadedModel
from sd_webui.worker.safety import SafetyChecker

RUNS = 3
JOB = Job(prompt="a photo of a green dog in the snow", width=512, height=512)


def save_checker(folder: Path) -> None:
    """The CompVis checker's configuration (ViT-L/14 at 224 pixels, 768-wide projection)."""
    config = CLIPConfig(
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "patch_size": 14,
            "image_size": 224,
        },
        projection_dim=768,
    )
    StableDiffusionSafetyChecker(config).save_pretrained(folder)
    CLIPImageProcessor(crop_size={"height": 224, "width": 224}).save_pretrained(folder)


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    print(cpu_line())
    settings = Settings()
    dtype = resolve_dtype(settings.sd_dtype, "cpu")
    pipe = build_sd_turbo(dtype)
    prepare_pipeline(pipe, settings, "cpu", dtype)
    model = LoadedModel(pipe, "sd-turbo-arch", "cpu", {})
    with tempfile.TemporaryDirectory() as folder:
        save_checker(Path(folder))
        checker = SafetyChecker.load(
            settings.model_copy(update={"sd_safety_checker_model": folder}), "cpu"
        )
    [image], _ = model.generate(JOB)  # the warm-up, and the picture the checker looks at
    checker.flagged([image])
    image_s, one_s, four_s = [], [], []
    for _ in range(RUNS):  # taking turns, so a burst of load slows every row alike
        image_s.append(timed(lambda: model.generate(JOB)))
        one_s.append(timed(lambda: checker.flagged([image])))
        four_s.append(timed(lambda: checker.flagged([image] * 4)) / 4)
    image_median = statistics.median(image_s)
    print(f"{'row':<36} {'s/image':>8} {'vs image':>9}")
    print(f"{f'512x512 image, 1 step, {dtype}':<36} {image_median:>8.2f} {1:>8.2f}x")
    for label, seconds in (
        ("safety checker, 1 image", one_s),
        ("safety checker, 4 images", four_s),
    ):
        median = statistics.median(seconds)
        print(f"{label:<36} {median:>8.2f} {median / image_median:>8.3f}x")


if __name__ == "__main__":
    main()
