"""docs/: the generated configuration reference is current and complete, the events doc covers the schema,
documented commands parse, and every link resolves."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel

from reidd import docgen
from reidd.config import Config
from reidd.events.schema import SCHEMA_PATH

from support import ROOT


DOCS = ROOT / "docs"


# --------------------------------------------------------------------------- configuration.md
def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == docgen.generate_markdown(), (
        "docs/configuration.md is stale: run `python -m reidd.docgen --out docs/configuration.md`")


def _fields(model: type[BaseModel], path: str) -> list[tuple[str, str]]:
    """(section path, field name) of every field, nested models and lists of models included."""
    out = []
    for name, info in model.model_fields.items():
        out.append((path, name))
        sub, is_list = docgen._model_of(info.annotation)
        if sub is not None:
            out += _fields(sub, (f"{path}.{name}" if path else name) + ("[]" if is_list else ""))
    return out


def test_configuration_reference_lists_every_field_with_its_default() -> None:
    text = docgen.generate_markdown()
    sections = {"": text.split("## `", 1)[0]}
    for m in re.finditer(r"^#{2,4} `([^`]+)`\n(.*?)(?=^#{2,4} |\Z)", text, re.M | re.S):
        sections[m.group(1)] = m.group(2)
    for path, name in _fields(Config, ""):
        assert path in sections, f"no section for {path}"
        assert re.search(rf"^\| `{re.escape(name)}` \|", sections[path], re.M), f"{path}.{name} not documented"
    row = re.search(r"^\| `port` \|(.*)$", sections["metrics"], re.M).group(1)
    assert "`9108`" in row and "<= 65535" in row
    row = re.search(r"^\| `url` \|(.*)$", sections["cameras[]"], re.M).group(1)
    assert "**required**" in row


def test_docgen_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    current = tmp_path / "configuration.md"
    assert docgen.main(["--out", str(current)]) == 0
    assert docgen.main(["--check", str(current)]) == 0
    current.write_text(current.read_text().replace("NMS IoU threshold", "NMS threshold"))
    assert docgen.main(["--check", str(current)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert docgen.main(["--check", str(tmp_path / "missing.md")]) == 2


def test_events_doc_covers_every_schema_field() -> None:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    schema = json.loads(SCHEMA_PATH.read_text())
    names = set(schema["properties"]) | set(schema["$defs"]["tracklet"]["properties"])
    names |= set(schema["$defs"]["match"]["properties"])
    for name in names:
        assert re.search(rf"^\| `{name}`", text, re.M) or f"`{name}`" in text.split("| field |", 1)[1], name
    assert f"`{schema['properties']['schema_version']['const']}`" in text


# --------------------------------------------------------------------------- commands and links
def _parser() -> argparse.ArgumentParser:
    """The reidd CLI with the train/eval/export and report commands (registered here if the CLI lacks them)."""
    from reidd import cli, report
    from reidd.evaluate import cli as eval_cli
    from reidd.train import cli as train_cli

    p = cli.build_parser()
    actions = p._subparsers._group_actions  # type: ignore[union-attr]
    sub = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        report.register(sub)
    if "train" not in sub.choices:
        train_cli.register(sub)
    if "eval" not in sub.choices:
        eval_cli.register(sub)
    return p


def test_documented_commands_parse() -> None:
    parser = _parser()
    commands = []
    for doc in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("reidd "):
                    commands.append((doc.name, line))
    assert len(commands) >= 8
    for name, line in commands:
        try:
            args = parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{line}` does not parse")
        assert callable(args.func)


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_in_docs_resolve() -> None:
    checked = 0
    for doc in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.name}: broken link {target}"
            if anchor:
                heads = re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)
                assert anchor in {_slug(h.replace("`", "")) for h in heads}, f"{doc.name}: no anchor {target}"
            checked += 1
    assert checked >= 20
    for name in ("architecture.md", "configuration.md", "events.md", "operations.md", "training.md"):
        assert (DOCS / name).is_file(), name
