"""Reflow string literals that run past the line length: the mechanical part of fixing ruff's E501.

    python .ci/reflow_strings.py $(ruff check --select E501 --output-format concise . | cut -d: -f1 | sort -u)

In each file given, a run of adjacent one-line string literals inside brackets (implicit concatenation, one
literal per line) that has a line over 120 columns, or a piece shorter than a few words, is joined and split
again at spaces to fill lines up to 120 columns; an f-string keeps its ``f`` only on the pieces with a
placeholder. A run is rewritten only when the module's syntax tree stays exactly the same, so the strings'
values cannot change. What it leaves (long code, comments, docstrings) ``ruff check .`` still lists.
"""
from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

LIMIT = 120  # pyproject.toml: [tool.ruff] line-length
SHORT = 28  # a piece shorter than this in the middle of a run is a leftover of an earlier split


def literal_parts(token: str) -> tuple[bool, str, str] | None:
    """(is an f-string, quote, content) of a one-line literal we can rewrite; None for bytes, raw or triple quotes."""
    m = re.match(r"([a-zA-Z]*)(['\"])(.*)\2$", token, re.S)
    if not m:
        return None
    prefix, quote, content = m.groups()
    if token[len(prefix):len(prefix) + 3] in ('"""', "'''") or set(prefix.lower()) - {"f"}:
        return None
    return "f" in prefix.lower(), quote, content


def literal_runs(src: str) -> list[list[tokenize.TokenInfo]]:
    """Runs of adjacent string tokens inside brackets, each after the first starting its own line."""
    tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    lines = src.split("\n")
    runs, current, depth = [], [], 0
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        if tok.type == tokenize.STRING and tok.start[0] == tok.end[0] and depth > 0 and literal_parts(tok.string):
            if current:
                between = tokens[tokens.index(current[-1]) + 1:i]
                own_line = lines[tok.start[0] - 1][:tok.start[1]].strip() == ""
                if between and all(b.type == tokenize.NL for b in between) and own_line:
                    current.append(tok)
                    continue
                runs.append(current)
            current = [tok]
        elif tok.type != tokenize.NL and current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def balanced(text: str) -> bool:
    """No placeholder of an f-string's content is cut open."""
    text = text.replace("{{", "").replace("}}", "")
    return text.count("{") == text.count("}")


def split_text(text: str, first: int, rest: int, last: int, fstring: bool) -> list[str] | None:
    """Pieces of ``text`` cut after spaces outside placeholders: the first at most ``first`` characters, the
    others ``rest``, the final one ``last`` (it shares its line with what follows the run)."""
    pieces, start = [], 0
    while len(text) - start > last:
        width = first if not pieces else rest
        cuts = [i + 1 for i in range(start, min(len(text), start + width))
                if text[i] == " " and i + 1 - start >= 8 and (not fstring or balanced(text[start:i + 1]))]
        if not cuts:
            return None
        pieces.append(text[start:cuts[-1]])
        start = cuts[-1]
    pieces.append(text[start:])
    return pieces


def as_literal(piece: str, quote: str, fstring: bool) -> str:
    """The piece as a literal: an f-string only when it holds a placeholder."""
    if fstring and re.search(r"\{", piece.replace("{{", "").replace("}}", "")):
        return f"f{quote}{piece}{quote}"
    if fstring:
        piece = piece.replace("{{", "{").replace("}}", "}")
    return f"{quote}{piece}{quote}"


def reflow(src: str) -> str:
    """``src`` with every long or fragmented run of literals reflowed (the syntax tree unchanged)."""
    tree = ast.dump(ast.parse(src))
    lines = src.split("\n")
    for run in reversed(literal_runs(src)):
        rows = range(run[0].start[0], run[-1].start[0] + 1)
        parts = [literal_parts(t.string) for t in run]
        fragmented = len(run) > 1 and any(len(p[2]) < SHORT for p in parts[:-1])
        if not (any(len(lines[r - 1]) > LIMIT for r in rows) or fragmented) or len({p[1] for p in parts}) != 1:
            continue
        quote, fstring = parts[0][1], any(p[0] for p in parts)
        text = "".join(p[2] if p[0] or not fstring else p[2].replace("{", "{{").replace("}", "}}") for p in parts)
        head = lines[run[0].start[0] - 1][:run[0].start[1]]
        tail = lines[run[-1].end[0] - 1][run[-1].end[1]:]
        col = run[0].start[1]
        width = LIMIT - col - 3  # the quotes and an f
        pieces = split_text(text, width, width, width - len(tail), fstring)
        if pieces is None:
            continue
        new = [(head if k == 0 else " " * col) + as_literal(p, quote, fstring) + (tail if k == len(pieces) - 1 else "")
               for k, p in enumerate(pieces)]
        candidate = lines[:run[0].start[0] - 1] + new + lines[run[-1].end[0]:]
        try:
            if ast.dump(ast.parse("\n".join(candidate))) != tree:
                continue
        except SyntaxError:
            continue
        lines = candidate
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    """Reflow the files in place (three passes: a reflowed run may make room for the next)."""
    for path in paths:
        src = Path(path).read_text(encoding="utf-8")
        for _ in range(3):
            new = reflow(src)
            if new == src:
                break
            src = new
        Path(path).write_text(src, encoding="utf-8")


if __name__ == "__main__":
    main([p for p in sys.argv[1:] if p.endswith(".py")])
