"""Readers for the deployment files the tests check: Dockerfile, compose.yaml, nginx config.

Small parsers of just what those files use, so that the tests look at the same instructions,
services and directives that Docker, Compose and nginx will; no engine runs here.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of CMD/HEALTHCHECK CMD/ENTRYPOINT, or the shell words otherwise."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1].strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list)
            return [str(item) for item in value]
        return shlex.split(text)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.arguments):
                name, _, value = word.partition("=")
                values[name] = value
        return values


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """The Dockerfile's stages, with continuation lines joined and ARGs in FROM resolved."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = arguments.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], arguments).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments.strip()))
    return stages


def compose(path: Path = ROOT / "compose.yaml") -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose's `${NAME:-default}` as Compose resolves it with NAME unset (or from environ)."""
    environ = environ or {}
    return _INTERPOLATION.sub(lambda m: environ.get(m.group(1), m.group(2) or ""), value)


@dataclass
class Block:
    """An nginx block: its directives (name, arguments) in order and its nested blocks."""

    name: str
    arguments: list[str]
    directives: list[tuple[str, list[str]]] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def values(self, name: str) -> list[list[str]]:
        return [args for directive, args in self.directives if directive == name]

    def value(self, name: str) -> list[str]:
        found = self.values(name)
        assert len(found) == 1, f"{self.name} {self.arguments}: {name} set {len(found)} times"
        return found[0]

    def block(self, name: str, *arguments: str) -> Block:
        for block in self.blocks:
            if block.name == name and tuple(block.arguments) == arguments:
                return block
        raise AssertionError(f"no `{name} {' '.join(arguments)}` block in {self.name}")


_NGINX_TOKEN = re.compile(r"""#[^\n]*|'[^']*'|"[^"]*"|[{};]|[^\s{};'"#]+""")


def nginx_config(path: Path) -> Block:
    """nginx's configuration syntax: directives end with `;`, blocks are `name args { … }`."""
    root = Block("main", [])
    stack = [root]
    words: list[str] = []
    for token in _NGINX_TOKEN.findall(path.read_text()):
        if token.startswith("#"):
            continue
        if token == ";":
            stack[-1].directives.append((words[0], words[1:]))
            words = []
        elif token == "{":
            block = Block(words[0], words[1:])
            stack[-1].blocks.append(block)
            stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words} in {path}"
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "'\"" else token)
    assert len(stack) == 1, f"unbalanced braces in {path}"
    assert not words, f"a directive without `;` at the end of {path}"
    return root


def nginx_seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)([smhd]?)", value)
    assert match, f"not an nginx time: {value}"
    return int(match.group(1)) * units[match.group(2) or "s"]
