"""Where `SD_MODEL` comes from, decided in well under a second, before torch is even imported.

`from_pretrained` on a hub id without network retries for about 20 seconds before failing with
a message about a missing file; a worker in a crash loop should instead say at once what to set.
"""

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, model_info, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError

HUB_PROBE_TIMEOUT_S = 5.0
MODEL_INDEX = "model_index.json"
FIX = (
    "set SD_MODEL to a local diffusers folder (`sd-demo-model FOLDER` makes a tiny one) "
    "or to a hub id that is cached (HF_HOME) or downloadable"
)


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded; `str()` is the one line the worker prints before exiting."""


def first_line(error: BaseException) -> str:
    """What a loading error says in one line (from_pretrained's run to many), else its repr."""
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


@dataclass(frozen=True)
class ModelSource:
    """What to pass to `from_pretrained`: the folder or hub id, and whether to stay offline."""

    name: str
    local_files_only: bool


def _looks_like_path(name: str) -> bool:
    """Hub ids are `owner/name`; anything else with a slash, a dot or a tilde is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") != 1


def _is_cached(repo_id: str) -> bool:
    return isinstance(try_to_load_from_cache(repo_id, MODEL_INDEX), str)


def locate_model(sd_model: str) -> ModelSource:
    """Check `SD_MODEL` without downloading; raises ModelUnavailable with what to set."""
    folder = Path(sd_model).expanduser()
    if folder.is_dir():
        if not (folder / MODEL_INDEX).is_file():
            raise ModelUnavailable(
                f"SD_MODEL={sd_model} is a folder without {MODEL_INDEX}, not a diffusers model; "
                + FIX
            )
        return ModelSource(str(folder), local_files_only=True)
    if _looks_like_path(sd_model):
        raise ModelUnavailable(f"SD_MODEL={sd_model}: no such folder; " + FIX)
    cached = _is_cached(sd_model)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise ModelUnavailable(
                f"SD_MODEL={sd_model} is not in the local model cache and HF_HUB_OFFLINE=1; " + FIX
            )
        return ModelSource(sd_model, local_files_only=True)
    try:
        model_info(sd_model, timeout=HUB_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ModelUnavailable(
            f"SD_MODEL={sd_model}: no such model on the hub (or it needs HF_TOKEN); " + FIX
        ) from None
    except Exception as error:  # any failure of this one probe means "no hub": use the cache
        if not cached:
            raise ModelUnavailable(
                f"SD_MODEL={sd_model} is not cached and the model hub is unreachable "
                f"({type(error).__name__}); " + FIX
            ) from None
        return ModelSource(sd_model, local_files_only=True)
    return ModelSource(sd_model, local_files_only=False)
