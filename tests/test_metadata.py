"""Reading sidecars written by anyone: every odd case shows what is known, never crashes."""

import json

import pytest

from sd_webui.metadata import UNKNOWN, ImageInfo, filtered_images, parse_image_info, strip_quotes

# FastSD CPU's own settings file, as the original worker wrote it (indent 4, no image_seeds).
REFERENCE = {
    "lcm_model_id": "stabilityai/sd-turbo",
    "openvino_lcm_model_id": "rupeshs/sd-turbo-openvino",
    "use_offline_model": False,
    "use_lcm_lora": False,
    "lcm_lora": {
        "base_model_id": "Lykon/dreamshaper-8",
        "lcm_lora_id": "latent-consistency/lcm-lora-sdv1-5",
    },
    "use_tiny_auto_encoder": False,
    "use_openvino": False,
    "prompt": "Golden Gate",
    "negative_prompt": "",
    "strength": 0.3,
    "image_height": 512,
    "image_width": 512,
    "inference_steps": 1,
    "guidance_scale": 1.0,
    "number_of_images": 4,
    "seed": -1,
    "use_seed": False,
    "use_safety_checker": False,
    "diffusion_task": "text_to_image",
    "lora": {"weight": 0.5, "fuse": True, "enabled": False},
    "controlnet": None,
    "rebuild_pipeline": False,
}
FULL = {
    "lcm_model_id": "stabilityai/sd-turbo",
    "lcm_lora": {"base_model_id": "Lykon/dreamshaper-8"},
    "prompt": "Golden Gate",
    "negative_prompt": "fog",
    "image_height": 512,
    "image_width": 768,
    "inference_steps": 2,
    "guidance_scale": 1.5,
    "number_of_images": 2,
    "seed": 7,
    "use_seed": True,
    "image_seeds": [7, 8],
}


def test_a_full_sidecar() -> None:
    info = parse_image_info(json.dumps(FULL), 1)
    assert info == ImageInfo(
        prompt="Golden Gate",
        negative_prompt="fog",
        model="stabilityai/sd-turbo",
        lora_base_model="Lykon/dreamshaper-8",
        width=768,
        height=512,
        seed=8,
        steps=2,
        guidance_scale=1.5,
    )
    assert info.size == "768x512"


def test_the_fastsd_cpu_reference_file() -> None:
    info = parse_image_info(json.dumps(REFERENCE, indent=4), 0)
    assert (info.prompt, info.model, info.size) == (
        "Golden Gate",
        "stabilityai/sd-turbo",
        "512x512",
    )
    assert info.lora_base_model == "Lykon/dreamshaper-8"
    assert info.seed is None  # seed -1, use_seed false: not reproducible, so not shown


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"prompt": "cut in ha', b"\xff\xfe\x00", b"null", b"[1, 2]", b'"text"', b"42"],
)
def test_unreadable_or_partial_json_gives_unknown_fields(raw: bytes) -> None:
    info = parse_image_info(raw, 0)
    assert info == ImageInfo()
    assert (info.prompt, info.model, info.lora_base_model, info.size) == (UNKNOWN,) * 4


def test_missing_fields_are_unknown() -> None:
    info = parse_image_info('{"prompt": "only a prompt"}', 0)
    assert info.prompt == "only a prompt"
    assert (info.model, info.lora_base_model, info.size) == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert info.seed is info.steps is info.guidance_scale is None


def test_old_format_prompts_lose_their_literal_quotes() -> None:
    raw = json.dumps({**FULL, "prompt": '"green dog"', "negative_prompt": '"blurry"'})
    info = parse_image_info(raw, 0)
    assert (info.prompt, info.negative_prompt) == ("green dog", "blurry")


@pytest.mark.parametrize(
    ("text", "shown"),
    [('"a"', "a"), ('""', ""), ('"', '"'), ('say "hi"', 'say "hi"'), (' "x" ', "x")],
)
def test_strip_quotes(text: str, shown: str) -> None:
    assert strip_quotes(text) == shown


def test_fields_of_the_wrong_type_are_unknown() -> None:
    raw = json.dumps(
        {
            "prompt": 12,
            "lcm_model_id": ["x"],
            "lcm_lora": "Lykon/dreamshaper-8",
            "image_width": "512",
            "image_height": True,
            "inference_steps": 1.5,
            "guidance_scale": "high",
        }
    )
    info = parse_image_info(raw, 0)
    assert info == ImageInfo()


def test_old_unseeded_runs_have_no_seed_and_seeded_runs_fall_back_to_seed() -> None:
    old = {**FULL, "seed": 123123, "use_seed": False}
    del old["image_seeds"]
    assert parse_image_info(json.dumps(old), 0).seed is None
    seeded = {**old, "use_seed": True}
    assert parse_image_info(json.dumps(seeded), 0).seed == 123123


def test_an_image_index_beyond_image_seeds() -> None:
    raw = json.dumps({**FULL, "use_seed": False})
    assert parse_image_info(raw, 5).seed is None


def test_integer_guidance_reads_as_float() -> None:
    assert parse_image_info(json.dumps({**FULL, "guidance_scale": 0}), 0).guidance_scale == 0.0


@pytest.mark.parametrize(
    ("nsfw", "filtered"),
    [([False, True], [2]), ([True, True], [1, 2]), (None, []), ("yes", []), ([1, "true"], [])],
)
def test_the_safety_checkers_flags_say_which_images_were_filtered(
    nsfw: object, filtered: list[int]
) -> None:
    """Only a list of true/false is read; anything else (other writers) filters nothing."""
    sidecar = {"prompt": "x", "number_of_images": 2, "nsfw": nsfw}
    assert filtered_images(sidecar) == filtered
    raw = json.dumps(sidecar)
    assert [parse_image_info(raw, index).filtered for index in (0, 1)] == [
        number in filtered for number in (1, 2)
    ]
