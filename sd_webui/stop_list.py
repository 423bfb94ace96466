"""The prompt stop-list: prompts with one of its words or phrases are refused before publishing.

STOP_WORDS_FILE replaces the built-in list (the old web UI's, matched on whole words so that
"Essex" or "Sussex" pass): one word or phrase a line, blank lines and `# comments` skipped,
matched case-insensitively as whole words, a phrase's words with any spacing between them. The
page and every API build jobs through `build_jobs`, so one list applies wherever jobs enter.
"""

import re
from functools import lru_cache
from pathlib import Path

from sd_webui.settings import get_settings

DEFAULT_STOP_WORDS = (
    "sex",
    "sexy",
    "nude",
    "nudes",
    "naked",
    "nsfw",
    "porn",
    "porno",
    "xxx",
    "hentai",
    "boobs",
    "tits",
    "penis",
    "vagina",
    "erotic",
)
NEVER = re.compile(r"(?!)")  # an empty list refuses nothing


def read_stop_words(path: Path) -> tuple[str, ...]:
    """The words and phrases of a STOP_WORDS_FILE (raises OSError or UnicodeDecodeError)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return tuple(line for line in lines if line)


@lru_cache
def stop_pattern(path: Path | None) -> re.Pattern[str]:
    """The list as one pattern, read once per process (settings are read once too)."""
    words = DEFAULT_STOP_WORDS if path is None else read_stop_words(path)
    if not words:
        return NEVER
    phrases = (r"\s+".join(map(re.escape, word.split())) for word in words)
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)


def has_stop_word(prompt: str) -> bool:
    """Whether the prompt contains a word or phrase of the stop-list as whole words."""
    return stop_pattern(get_settings().stop_words_file).search(prompt) is not None
