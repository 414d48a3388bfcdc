"""Every ``labelwise ...`` command line in README.md, docs/*.md and the comments of configs/*.yaml parses with the
real CLI parser (nothing runs): a renamed option or a value form the CLI does not take fails here, naming the file,
the line and click's error."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from conftest import REPO

from labelwise.cli import cli_command, expand_per_axis_options

try:  # recent typer vendors click (its Exit is typer.Exit)
    from typer import Exit
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import Exit, UsageError

#: Documented lines that are not command lines and cannot be parsed, with the reason. Keep it short.
UNPARSABLE: dict[str, str] = {}

#: Documented command lines that name a command not in the CLI yet (being added elsewhere): listed, not failed.
PENDING_COMMANDS = ("export",)


@dataclass
class Example:
    file: str
    line: int
    text: str
    partial: bool  # an inline `labelwise ...` mention in prose: required options may be left out

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "configs").glob("*.yaml"))]


def _join_continued(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines ending in a backslash joined with the next; each keeps the number of its first line."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
            pending = None
        code = _strip_comment(text).rstrip()
        if code.endswith("\\"):
            pending = (number, code[:-1].rstrip())
            continue
        out.append((number, text))
    if pending is not None:
        out.append(pending)
    return out


def _strip_comment(text: str) -> str:
    """``text`` without a shell comment (`` # `` and what follows, outside quotes)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def examples() -> list[Example]:
    """Command lines in code blocks and config comments (whole commands), and inline `labelwise ...` spans."""
    found: list[Example] = []
    for path in _documents():
        name = str(path.relative_to(REPO))
        lines = path.read_text().splitlines()
        commands: list[tuple[int, str]] = []
        if path.suffix == ".yaml":
            comment_lines = [(i, line.lstrip()[1:]) for i, line in enumerate(lines, 1) if line.lstrip().startswith("#")]
            commands = _join_continued(comment_lines)
            spans_from = comment_lines
        else:
            block, in_code = [], False
            for i, line in enumerate(lines, 1):
                if line.lstrip().startswith("```"):
                    in_code = not in_code
                    continue
                if in_code:
                    block.append((i, line))
            commands = _join_continued(block)
            spans_from = list(enumerate(lines, 1))
        for number, text in commands:
            text = text.strip()
            text = text[2:] if text.startswith("$ ") else text
            if text.startswith("labelwise "):
                found.append(Example(name, number, text, partial=False))
        for number, text in spans_from:
            for span in re.findall(r"`(labelwise [^`]+)`", text):
                found.append(Example(name, number, span, partial=True))
    return found


def argv_of(text: str) -> list[str]:
    """The arguments after ``labelwise``: comments, redirections and pipes cut off; ``a|b`` (alternatives in a
    placeholder) read as ``a``; ``[--opt X]`` (an optional part of a synopsis) read as ``--opt X``."""
    text = _strip_comment(text)
    text = re.sub(r"(?<=\S)\|(?=\S)[^\s]*", "", text)  # onnx|torchscript -> onnx
    text = re.sub(r"\[(-[^\[\]]*)\]", r"\1", text)  # [--json F] -> --json F
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    tokens = list(lexer)
    args = []
    for token in tokens:
        if set(token) <= set("<>|&;"):
            if args and args[-1].isdigit() and token.startswith(">"):
                args.pop()  # 2> file
            break
        args.append(token)
    assert args[0] == "labelwise", text
    return args[1:]


def parse_only(args: list[str], partial: bool = False) -> None:
    """Parse ``args`` as ``main`` does (the same per-axis rewrite, the same click command), invoking nothing.
    ``partial``: required options may be missing. Raises click's UsageError."""
    command = cli_command()
    if partial:
        _optional_everywhere(command)
    ctx = command.make_context("labelwise", expand_per_axis_options(args), resilient_parsing=False)
    while isinstance(ctx.command, typer.core.TyperGroup):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = ctx.command.resolve_command(ctx, rest)
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)


def _optional_everywhere(command) -> None:
    for param in command.params:
        param.required = False
    for sub in getattr(command, "commands", {}).values():
        _optional_everywhere(sub)


EXAMPLES = examples()


def test_the_docs_hold_command_lines():
    assert len([e for e in EXAMPLES if not e.partial]) > 50
    files = {e.file for e in EXAMPLES}
    assert {"README.md", "docs/vessels.md", "configs/ds6-synthetic-3d.yaml"} <= files
    assert any("--shape 96 96 96" in e.text for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_documented_command_line_parses(example, capsys):
    if example.text in UNPARSABLE:
        pytest.skip(UNPARSABLE[example.text])
    args = argv_of(example.text)
    if args and args[0] in PENDING_COMMANDS:
        commands = cli_command().commands
        if args[0] not in commands:
            pytest.skip(f"labelwise {args[0]} is not in the CLI yet")
    try:
        parse_only(args, partial=example.partial)
    except Exit:  # --help
        pass
    except UsageError as err:
        pytest.fail(
            f"{example.file}:{example.line}: `{example.text}` is rejected: {err.format_message()}", pytrace=False
        )
    capsys.readouterr()


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            "labelwise predict runs/x --input a.nii.gz --out o --window 64 64 32   # comment",
            ["predict", "runs/x", "--input", "a.nii.gz", "--out", "o", "--window", "64", "64", "32"],
        ),
        (
            "labelwise train c.yaml --set 'method.tasks={mim: 1.0}' > log.txt 2>&1",
            ["train", "c.yaml", "--set", "method.tasks={mim: 1.0}"],
        ),
        (
            "labelwise export RUN --format onnx|torchscript --out FILE",
            ["export", "RUN", "--format", "onnx", "--out", "FILE"],
        ),
        (
            "labelwise evaluate segmentation --pred D --truth D [--json F] [--allow-missing]",
            ["evaluate", "segmentation", "--pred", "D", "--truth", "D", "--json", "F", "--allow-missing"],
        ),
    ],
)
def test_argv_of(line, expected):
    assert argv_of(line) == expected


def test_the_parser_rejects_what_main_rejects():
    """The check is real: a wrong option, an extra argument and a bad value are caught without running anything."""
    for args in (
        ["train", "c.yaml", "--no-such-option"],
        ["report", "a", "b"],
        ["data", "synth", "vessels", "--out", "x", "--dim", "7"],
        ["evaluate", "nothing"],
    ):
        with pytest.raises(UsageError):
            parse_only(args)
    with pytest.raises(UsageError) as info:
        parse_only(["data", "synth", "vessels", "--dim", "3"])
    assert "Missing option '--out'" in info.value.format_message()
    parse_only(["data", "synth", "vessels", "--dim", "3"], partial=True)
    parse_only(["data", "synth", "vessels", "--out", "x", "--shape", "96", "96", "96"])
