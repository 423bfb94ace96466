"""Contract 2: the `<id>.json` sidecar (FastSD CPU's settings format) and the PNG `parameters` text.

Writing is strict (the worker records exactly what it used); reading is forgiving, because the
images folder is also filled by other writers: old FastSD workers, sync tools, people.
"""

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sd_webui.jobs import Job

UNKNOWN = "unknown"


class LcmLora(BaseModel):
    base_model_id: str = "Lykon/dreamshaper-8"
    lcm_lora_id: str = "latent-consistency/lcm-lora-sdv1-5"


class Lora(BaseModel):
    weight: float = 0.5
    fuse: bool = True
    enabled: bool = False


class FastSDSettings(BaseModel):
    """Every field of FastSD CPU's settings JSON, plus `image_seeds` (one per image)."""

    model_config = ConfigDict(extra="allow")

    lcm_model_id: str
    openvino_lcm_model_id: str = "rupeshs/sd-turbo-openvino"
    use_offline_model: bool = False
    use_lcm_lora: bool = False
    lcm_lora: LcmLora = Field(default_factory=LcmLora)
    use_tiny_auto_encoder: bool = False
    use_openvino: bool = False
    prompt: str
    negative_prompt: str = ""
    strength: float = 0.3
    image_height: int
    image_width: int
    inference_steps: int
    guidance_scale: float
    number_of_images: int
    seed: int
    use_seed: bool
    use_safety_checker: bool = False
    diffusion_task: str = "text_to_image"
    lora: Lora = Field(default_factory=Lora)
    controlnet: None = None
    rebuild_pipeline: bool = False
    image_seeds: list[int]

    @classmethod
    def for_job(
        cls, job: Job, *, model_id: str, seeds: list[int], **extra: Any
    ) -> "FastSDSettings":
        """The record of what a worker actually did for `job` (`extra`: e.g. dtype used)."""
        return cls(
            lcm_model_id=model_id,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            image_height=job.height,
            image_width=job.width,
            inference_steps=job.steps,
            guidance_scale=float(job.guidance_scale),
            number_of_images=job.count,
            seed=seeds[0],
            use_seed=True,
            image_seeds=seeds,
            **extra,
        )

    def to_json(self) -> str:
        """Indented like FastSD CPU writes it."""
        return json.dumps(self.model_dump(mode="json"), indent=4) + "\n"

    def a1111_parameters(self, image_index: int) -> str:
        """The PNG `parameters` text in AUTOMATIC1111's form, for image `image_index` (0-based)."""
        settings = ", ".join(
            [
                f"Steps: {self.inference_steps}",
                "Sampler: Euler",
                f"CFG scale: {self.guidance_scale:g}",
                f"Seed: {self.image_seeds[image_index]}",
                f"Size: {self.image_width}x{self.image_height}",
                f"Model: {self.lcm_model_id}",
            ]
        )
        return f"{self.prompt}\nNegative prompt: {self.negative_prompt}\n{settings}"


def filtered_images(sidecar: Any) -> list[int]:
    """The 1-based numbers of the images the safety checker blacked out: the sidecar's `nsfw`
    flags (a parsed `<id>.json`; anything else, or no flags, is none)."""
    flags = sidecar.get("nsfw") if isinstance(sidecar, dict) else None
    if not isinstance(flags, list):
        return []
    return [index + 1 for index, flag in enumerate(flags) if flag is True]


class ImageInfo(BaseModel):
    """What the gallery shows about one image; every field tolerates a missing sidecar."""

    model_config = ConfigDict(frozen=True)

    prompt: str = UNKNOWN
    negative_prompt: str = ""
    model: str = UNKNOWN
    lora_base_model: str = UNKNOWN
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    filtered: bool = False  # the safety checker flagged it: the PNG is black

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}" if self.width and self.height else UNKNOWN


def strip_quotes(text: str) -> str:
    """Old workers stored prompts as `"green dog"` (jq without -r); show them without."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _as(kind: type, value: Any) -> Any:
    if isinstance(value, bool) and kind is not bool:
        return None
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value if isinstance(value, kind) else None


def parse_image_info(raw: bytes | str, image_index: int) -> ImageInfo:
    """Forgiving parse of a sidecar for the image `image_index` (0-based) of its job.

    Unreadable, partial or odd JSON gives `ImageInfo()` ("unknown" fields), never an error.
    """
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ImageInfo()
    if not isinstance(data, dict):
        return ImageInfo()
    seeds = data.get("image_seeds")
    seed = seeds[image_index] if isinstance(seeds, list) and image_index < len(seeds) else None
    if seed is None and data.get("use_seed") is True:
        seed = data.get("seed")
    lcm_lora = data.get("lcm_lora")
    prompt = _as(str, data.get("prompt"))
    return ImageInfo(
        prompt=strip_quotes(prompt) if prompt is not None else UNKNOWN,
        negative_prompt=strip_quotes(_as(str, data.get("negative_prompt")) or ""),
        model=_as(str, data.get("lcm_model_id")) or UNKNOWN,
        lora_base_model=(
            _as(str, lcm_lora.get("base_model_id")) if isinstance(lcm_lora, dict) else None
        )
        or UNKNOWN,
        width=_as(int, data.get("image_width")),
        height=_as(int, data.get("image_height")),
        seed=_as(int, seed),
        steps=_as(int, data.get("inference_steps")),
        guidance_scale=_as(float, data.get("guidance_scale")),
        filtered=image_index + 1 in filtered_images(data),
    )
