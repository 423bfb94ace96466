"""SD_BACKEND=openvino: the text encoder and the UNet run as OpenVINO models on the CPU.

Each is converted from the loaded diffusers pipeline with `ov.convert_model` (optimum-intel
cannot be installed beside transformers 5), with dynamic batch and size, and saved as IR in
SD_OPENVINO_CACHE under a key of the component's weights and the openvino version, so a changed
model or openvino rebuilds it and the next start loads it in seconds. Each (batch, height,
width) a job asks for is compiled once, for a static shape (what OpenVINO's CPU plugin runs
fastest), and kept. The modules keep diffusers' own calling convention, so the pipeline's loop,
its step callback (progress, cancel at step boundaries) and the seeds are those of the torch
backend. Precision: SD_DTYPE=float32 asks for f32; `auto` leaves it to OpenVINO, which takes
bf16 on CPUs that run it natively (AMX, AVX-512 bf16) and f32 elsewhere. The decoder stays in
torch: OpenVINO did not pay there (bench/inference.py).
"""

import hashlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from huggingface_hub import constants

from sd_webui.settings import Settings
from sd_webui.worker.model_source import ModelUnavailable, first_line

log = logging.getLogger(__name__)

TEXT_TOKENS = 77  # CLIP's fixed prompt length, as the pipeline pads it
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as error:
        raise ModelUnavailable(
            f"SD_BACKEND=openvino needs the openvino package ({first_line(error)}); install the "
            "worker's extra (pip install 'sd-webui[worker]') or set SD_BACKEND=torch"
        ) from error
    return openvino


def weights_key(module: torch.nn.Module, version: str) -> str:
    """A digest of the module's weights (names, shapes, sums) and the openvino version: the IR
    cache's key, so other weights or another openvino never reuse an old conversion."""
    digest = hashlib.sha256(version.encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{float(tensor.double().sum())}".encode())
    return digest.hexdigest()[:24]


class _UNetCall(torch.nn.Module):
    """The UNet as a plain tensor function, for tracing."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class _TextCall(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


class CompiledShapes:
    """One IR, compiled once per static input shape and kept."""

    def __init__(self, ov: Any, path: Path, config: dict[str, str]) -> None:
        self.ov, self.path, self.config = ov, path, config
        self.core = ov.Core()
        self._compiled: dict[tuple, Any] = {}

    def run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        key = tuple(tuple(tensor.shape) for tensor in inputs.values())
        compiled = self._compiled.get(key)
        if compiled is None:
            started = time.perf_counter()
            model = self.core.read_model(self.path)
            model.reshape({name: list(tensor.shape) for name, tensor in inputs.items()})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[key] = compiled
            log.info(
                "compiled %s for %s in %.1f s",
                self.path.parent.name,
                key,
                time.perf_counter() - started,
            )
        result = compiled({name: tensor.numpy() for name, tensor in inputs.items()})
        return torch.from_numpy(result[0].copy())


class OpenVinoModule(torch.nn.Module):
    """What the pipeline reads of the module it replaces (config, dtype, device); the IR in
    `shapes` computes."""

    def __init__(self, original: torch.nn.Module, shapes: CompiledShapes) -> None:
        super().__init__()
        self.config = original.config
        self.shapes = shapes

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class OpenVinoUNet(OpenVinoModule):
    """Stands in for the pipeline's UNet."""

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        **_: Any,
    ) -> tuple[torch.Tensor]:
        timestep = torch.as_tensor(timestep, dtype=torch.float32).reshape(())
        output = self.shapes.run(
            {
                "sample": sample.float(),
                "timestep": timestep,
                "encoder_hidden_states": encoder_hidden_states.float(),
            }
        )
        return (output,)


class OpenVinoTextEncoder(OpenVinoModule):
    """Stands in for the pipeline's CLIP text encoder (last hidden state only: no clip skip)."""

    def forward(self, input_ids: torch.Tensor, **_: Any) -> tuple[torch.Tensor]:
        return (self.shapes.run({"input_ids": input_ids.to(torch.int64)}),)


def _convert(ov: Any, module: torch.nn.Module, example: dict, inputs: list, path: Path) -> None:
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks in diffusers' code become constants of the trace, which is right for
        # the shapes a job can have; the tracer warns about each.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(module, example_input=example, input=inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{time.time_ns()}.xml")
    ov.save_model(model, temporary, compress_to_fp16=False)
    temporary.with_suffix(".bin").rename(path.with_suffix(".bin"))
    temporary.rename(path)  # the .xml last: a cache entry exists only whole
    log.info("converted %s to OpenVINO in %.1f s", path.parent.name, time.perf_counter() - started)


def use_openvino(pipe: DiffusionPipeline, settings: Settings) -> dict[str, Any]:
    """Swap the pipeline's text encoder and UNet for OpenVINO ones (converting them once into
    the cache); returns the metadata to record. Raises ModelUnavailable on any failure."""
    ov = import_openvino()
    cache = settings.sd_openvino_cache or Path(constants.HF_HOME) / "openvino"
    config = {}
    if settings.sd_dtype in PRECISION_HINTS:
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[settings.sd_dtype]
    try:
        unet_dir = cache / f"unet-{weights_key(pipe.unet, ov.__version__)}"
        text_dir = cache / f"text-{weights_key(pipe.text_encoder, ov.__version__)}"
        unet_ir, text_ir = unet_dir / "model.xml", text_dir / "model.xml"
        channels = pipe.unet.config.in_channels
        width = pipe.text_encoder.config.hidden_size
        if not text_ir.exists():
            ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.int64)
            inputs = [("input_ids", ov.PartialShape([-1, TEXT_TOKENS]), ov.Type.i64)]
            _convert(ov, _TextCall(pipe.text_encoder), {"input_ids": ids}, inputs, text_ir)
        if not unet_ir.exists():
            example = {
                "sample": torch.zeros(1, channels, 32, 32),
                "timestep": torch.tensor(999.0),
                "encoder_hidden_states": torch.zeros(1, TEXT_TOKENS, width),
            }
            inputs = [
                ("sample", ov.PartialShape([-1, channels, -1, -1]), ov.Type.f32),
                ("timestep", ov.PartialShape([]), ov.Type.f32),
                ("encoder_hidden_states", ov.PartialShape([-1, TEXT_TOKENS, width]), ov.Type.f32),
            ]
            _convert(ov, _UNetCall(pipe.unet), example, inputs, unet_ir)
        unet_shapes = CompiledShapes(ov, unet_ir, config)
        text_shapes = CompiledShapes(ov, text_ir, config)
        pipe.unet = OpenVinoUNet(pipe.unet, unet_shapes)
        pipe.text_encoder = OpenVinoTextEncoder(pipe.text_encoder, text_shapes)
    except ModelUnavailable:
        raise
    except Exception as error:  # conversion or compilation: the worker must not start half-done
        raise ModelUnavailable(
            f"SD_BACKEND=openvino: converting the model failed ({first_line(error)}); set "
            "SD_BACKEND=torch, or check SD_OPENVINO_CACHE is writable"
        ) from error
    return {"use_openvino": True, "openvino_lcm_model_id": str(unet_dir)}
