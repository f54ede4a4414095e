"""The README and docs name configs and files; every one of them must exist and load.

A newcomer copies these commands first: `alignlab sft -c configs/sft_tiny.yaml ...` once failed because
`configs/` held a dangling link. This test reads the Markdown itself, so a renamed config, a moved
file or a mistyped override in the docs fails here rather than on a user's machine.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from alignlab import config as C

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMAS = {"sft": "SFTConfig", "ei": "EIConfig", "grpo": "GRPOConfig", "dpo": "DPOConfig", "rm": "RMConfig",
           "ppo": "PPOConfig", "pipeline": "PipelineConfig", "preflight": None}  # preflight: any SFT or DPO config
REPO_PATH = re.compile(r"(?<![\w./-])((?:alignlab|bench|docs|configs|tests)/[\w./-]*)")


def _code(text: str) -> list[tuple[str, str | None]]:
    """(code line, the line after it or None) from fenced blocks (continuations joined) and inline spans."""
    out: list[tuple[str, str | None]] = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        out += [(ln, lines[i + 1] if i + 1 < len(lines) else None) for i, ln in enumerate(lines)]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [(span, None) for span in re.findall(r"`([^`\n]+)`", prose)]
    return out


def _commands():
    """Every `alignlab <training command> -c X [overrides]` in the docs, with whether it is shown failing."""
    for doc in DOCS:
        for line, after in _code(doc.read_text()):
            line = line.split("#", 1)[0].strip()
            shown_failing = line.startswith("$ ") and (after or "").startswith("error:")
            line = line.removeprefix("$ ").split("&&")[0]
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if len(words) < 3 or words[0] != "alignlab" or words[1] not in SCHEMAS or "-c" not in words:
                continue
            cfg = words[words.index("-c") + 1]
            if cfg.isupper():  # a placeholder (CONFIG)
                continue
            overrides = [w for w in words[words.index("-c") + 2:]
                         if "=" in w and not w.startswith("-") and not w.endswith("=...")]  # `key=...`: a placeholder
            yield pytest.param(words[1], cfg, overrides, shown_failing, id=f"{doc.name}:{' '.join(words[1:])}")


COMMANDS = list(_commands())


def test_the_docs_name_commands():
    assert len(COMMANDS) >= 15  # the parser still finds them (a broken regex would pass everything)
    assert any(c.values[1] == "configs/sft_tiny.yaml" for c in COMMANDS)


@pytest.mark.parametrize("algo,cfg,overrides,shown_failing", COMMANDS)
def test_documented_command_config_loads(algo, cfg, overrides, shown_failing, monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in the docs are relative to the repository root
    if "/" in cfg or cfg.endswith(".yaml"):
        assert (ROOT / cfg).is_file(), f"{cfg} is named in the docs but does not exist"
    if algo == "preflight":  # loads as the config of a loop that preflight checks
        from alignlab.preflight import load

        if shown_failing:
            with pytest.raises(C.ConfigError):
                load(cfg, overrides)
        else:
            load(cfg, overrides)
        return
    schema = getattr(C, SCHEMAS[algo])
    if shown_failing:  # the docs show this one refused, with its error: it must still be refused
        with pytest.raises(C.ConfigError):
            C.load_config(schema, cfg, overrides)
        return
    loaded = C.load_config(schema, cfg, overrides)
    if algo == "pipeline":
        from alignlab.pipeline import stage_configs

        stage_configs(loaded)


def test_configs_folder_is_the_packaged_configs():
    packaged = sorted(p.name for p in (ROOT / "alignlab" / "configs").glob("*.yaml"))
    assert packaged and sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == packaged
    for p in (ROOT / "configs").iterdir():
        assert p.exists(), f"{p} is a dangling link"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_repo_paths_exist(doc):
    text = doc.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):  # relative Markdown links
        if "://" not in target and not (doc.parent / target).exists():
            missing.append(target)
    for line, _ in _code(text):
        line = re.sub(r"--(?:yaml|out)[ =]\S+", "", line)  # files a command writes, not ones it reads
        for path in REPO_PATH.findall(line):
            path = path.rstrip(".,:;")
            # run outputs and placeholders are not repository files
            if any(ch in path for ch in "<*") or path.startswith("alignlab/<"):
                continue
            if not (ROOT / path).exists():
                missing.append(path)
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
