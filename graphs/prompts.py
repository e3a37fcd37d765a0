"""Versioned prompt files under `graphs/prompts/`, loaded by name (`answer.v1`) and filled in.

A prompt file holds one section per chat role, each opened by a marker line `<!-- system -->` or
`<!-- user -->`; `{{name}}` placeholders are replaced at render time. Prompts are data, not code, so a new
wording is a new file (`answer.v2.md`) that can be compared with the old one on the same question set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"

ANSWER = "answer.v1"
REWRITE = "rewrite.v1"
VARIANTS = "variants.v1"

_SECTION = re.compile(r"^<!--\s*(system|user|assistant)\s*-->\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_ROLES = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt file: its name and (role, template) sections in file order."""

    name: str
    sections: tuple[tuple[str, str], ...]

    @property
    def placeholders(self) -> set[str]:
        """Every `{{name}}` the templates use."""
        return {m.group(1) for _, text in self.sections for m in _PLACEHOLDER.finditer(text)}

    def render(self, **values: object) -> list[BaseMessage]:
        """Chat messages with every placeholder filled; a missing value is an error, not an empty string."""
        missing = self.placeholders - values.keys()
        if missing:
            raise KeyError(f"prompt {self.name!r} needs values for {sorted(missing)}")

        # One pass with a callback, so text substituted in (a passage that contains "{{question}}") is never
        # expanded again.
        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)

        return [_ROLES[role](content=fill(text)) for role, text in self.sections]

    def system_text(self, **values: object) -> str:
        """The rendered system section alone (for tests and the 'how I answered' view)."""
        return next((m.content for m in self.render(**values) if isinstance(m, SystemMessage)), "")  # type: ignore[return-value]


def parse_prompt(name: str, text: str) -> Prompt:
    """Split a prompt file into its role sections."""
    parts = _SECTION.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise ValueError(f"prompt {name!r} must start with a role marker such as <!-- system -->")
    sections = tuple((parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts), 2))
    return Prompt(name=name, sections=sections)


@lru_cache(maxsize=32)
def load_prompt(name: str, directory: Path = PROMPTS_DIR) -> Prompt:
    """The prompt `name` (e.g. `answer.v1`) from `graphs/prompts/<name>.md`."""
    path = directory / f"{name}.md"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.md"))
        raise FileNotFoundError(f"no prompt {name!r} in {directory}; known: {known}")
    return parse_prompt(name, path.read_text(encoding="utf-8"))
