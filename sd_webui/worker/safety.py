"""SD_SAFETY_CHECKER: diffusers' StableDiffusionSafetyChecker on every generated image.

As in the system this replaces (FastSD CPU started with `--use_safety_checker`), an image the
checker flags is replaced by a black one of the same size before anything is written; the job's
sidecar says so (`use_safety_checker`, and `nsfw`: one flag per image) and so does its `done`
event (`filtered`), so the page shows a "filtered" tile instead of a bare black square.
"""

import logging

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image as PILImage
from PIL.Image import Image
from transformers import CLIPImageProcessor

from sd_webui.settings import Settings
from sd_webui.worker.model_source import ModelUnavailable, first_line

log = logging.getLogger(__name__)


class SafetyChecker:
    """The checker model and its CLIP feature extractor, loaded once per worker."""

    def __init__(
        self, model: StableDiffusionSafetyChecker, features: CLIPImageProcessor, device: str
    ) -> None:
        self.model = model
        self.features = features
        self.device = device

    @classmethod
    def load(cls, settings: Settings, device: str) -> "SafetyChecker":
        """`SD_SAFETY_CHECKER_MODEL` (a hub id or a local folder with the checker and its
        preprocessor config); raises ModelUnavailable naming the setting, never runs without."""
        name = settings.sd_safety_checker_model
        try:
            model = StableDiffusionSafetyChecker.from_pretrained(name, dtype=torch.float32)
            features = CLIPImageProcessor.from_pretrained(name)
        except Exception as error:  # a missing folder, no network, a broken file: all one fix
            raise ModelUnavailable(
                f"SD_SAFETY_CHECKER_MODEL={name} could not be loaded ({first_line(error)}); set "
                "it to a local folder with the safety checker and its preprocessor_config.json "
                "or a cached hub id, or set SD_SAFETY_CHECKER=0"
            ) from error
        log.info("safety checker %s loaded", name)
        return cls(model.to(device).eval(), features, device)

    def flagged(self, images: list[Image]) -> list[bool]:
        """One flag per image: True where the checker finds a concept past its threshold."""
        clip_input = self.features(images=images, return_tensors="pt").pixel_values
        pixels = [np.asarray(image, dtype=np.float32) / 255 for image in images]
        with torch.inference_mode():
            _, flags = self.model(clip_input=clip_input.to(self.device), images=pixels)
        return [bool(flag) for flag in flags]

    def filter(self, images: list[Image]) -> tuple[list[Image], list[bool]]:
        """The images with every flagged one blacked out, and the flags."""
        flags = self.flagged(images)
        kept = [
            PILImage.new("RGB", image.size) if flag else image
            for image, flag in zip(images, flags, strict=True)
        ]
        return kept, flags
