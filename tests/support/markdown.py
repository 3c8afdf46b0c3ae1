"""The fenced code blocks of one section of a Markdown document (the README's quick start),
read with markdown-it-py, so that what a reader sees as a block is what a test runs."""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block: its info string (``sh``), its text and its first line in the file."""

    language: str
    text: str
    line: int


def section_code_blocks(markdown: str, heading: str) -> list[CodeBlock]:
    """Every fenced block below the heading titled ``heading``, up to the next heading of
    the same or a higher level; ValueError if there is no such heading."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    level: int | None = None
    blocks: list[CodeBlock] = []
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            depth = int(token.tag[1:])
            if level is not None and depth <= level:
                break
            if level is None and tokens[index + 1].content.strip() == heading:
                level = depth
        elif level is not None and token.type == "fence":
            line = token.map[0] + 1 if token.map else 0
            blocks.append(CodeBlock(token.info.strip(), token.content, line))
    if level is None:
        raise ValueError(f"no heading {heading!r}")
    return blocks
