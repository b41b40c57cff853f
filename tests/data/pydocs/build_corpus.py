"""Build a plain-text English corpus from the reStructuredText sources of the Python documentation.

The input is the ``_sources`` directory of the HTML documentation (for example from the Debian
package python3.11-doc: ``usr/share/doc/python3.11/html/_sources``). Every section of every
``.rst.txt`` file becomes one document. The output uses the layout of the original BERT
pretraining data: one paragraph per line and a blank line between documents.

Example::

    python3 tests/data/pydocs/build_corpus.py /tmp/pydoc/usr/share/doc/python3.11/html/_sources \\
        --include tutorial --include library --max-bytes 400000 --out tests/data/pydocs/corpus.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

MIN_PARAGRAPHS = 2
MIN_CHARS = 200

# A line made of one repeated punctuation character: a section adornment or a transition.
ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+\s*$")
# The border of a simple table: runs of "=" separated by spaces.
SIMPLE_TABLE_BORDER = re.compile(r"^=+( +=+)+\s*$")
# The start of a bullet or enumerated list item.
LIST_ITEM = re.compile(r"^([-*+\u2022]|#\.|\d+\.|\(?\d+\)|\([a-zA-Z]\))\s+")

ROLE = re.compile(r":(?:[\w-]+:)?([\w-]+):`((?:[^`\\]|\\.)+)`")
LITERAL = re.compile(r"``(.+?)``")
HYPERLINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
NAMED_REFERENCE = re.compile(r"`([^`]+)`__?")
SIMPLE_REFERENCE = re.compile(r"(?<![\w`\\])([A-Za-z][\w.-]*[A-Za-z0-9])__?(?![\w`])")
FOOTNOTE_REFERENCE = re.compile(r"\s*\[(?:#[\w-]*|\d+|\*)\]_")
STRONG = re.compile(r"(?<![\w*\\])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])")
EMPHASIS = re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![\w*])")
INTERPRETED = re.compile(r"`([^`]+)`")
SUBSTITUTION = re.compile(r"\|(\w+)\|")
ESCAPE = re.compile(r"\\(.)")
PLACEHOLDER = re.compile("\x00(\\d+)\x01")
# An internal hyperlink target, such as ".. _tut-intro:".
LABEL = re.compile(r"^\.\. _([^:`]+):\s*$")

# Roles that name a Python or C object: Sphinx shortens "~a.b.c" to "c" and drops a leading ".".
OBJECT_ROLES = {"func", "meth", "class", "mod", "exc", "attr", "data", "const", "obj", "member", "macro"}
OBJECT_ROLES |= {"expr", "type", "struct", "var"}
# Roles that Sphinx renders with "()" appended.
CALLABLE_ROLES = {"func", "meth"}
SUBSTITUTIONS = {"nbsp": " "}


def indent_of(line: str) -> int:
    """Return the number of leading spaces of a line (tabs count as 8 columns)."""
    expanded = line.expandtabs(8)
    return len(expanded) - len(expanded.lstrip(" "))


def content_indent(line: str) -> int:
    """Return the column where the text of a line starts, after any list marker."""
    stripped = line.lstrip(" ")
    match = LIST_ITEM.match(stripped)
    return indent_of(line) + (match.end() if match else 0)


def is_blank(line: str) -> bool:
    """Tell whether a line holds only whitespace."""
    return not line.strip()


def is_title_underline(title: str, underline: str) -> bool:
    """Tell whether ``underline`` adorns ``title`` as a section title."""
    return (
        not is_blank(title)
        and not title[0].isspace()
        and not ADORNMENT.match(title)
        and ADORNMENT.match(underline) is not None
        and len(underline.rstrip()) >= len(title.rstrip())
    )


def split_sections(lines: list[str]) -> list[list[str]]:
    """Split a file into sections at its titles; the title and adornment lines are dropped."""
    sections: list[list[str]] = [[]]
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and is_title_underline(lines[i], lines[i + 1]):
            current = sections[-1]
            if current and current[-1].rstrip() == lines[i + 1].rstrip():
                current.pop()  # overline of an over-and-under title
            sections.append([])
            i += 2
            continue
        sections[-1].append(lines[i])
        i += 1
    return [section for section in sections if any(not is_blank(line) for line in section)]


def skip_indented(lines: list[str], start: int, indent: int) -> int:
    """Return the index of the first non-blank line at or after ``start`` indented ``indent`` or less."""
    i = start
    while i < len(lines) and (is_blank(lines[i]) or indent_of(lines[i]) > indent):
        i += 1
    return i


def skip_simple_table(lines: list[str], start: int) -> int:
    """Return the index just past the simple table whose first border is at ``start``."""
    i = start + 1
    while i < len(lines):
        if SIMPLE_TABLE_BORDER.match(lines[i].strip()) and (i + 1 == len(lines) or is_blank(lines[i + 1])):
            return i + 1
        i += 1
    return i


def strip_literal_marker(line: str) -> str:
    """Rewrite a line ending in "::" the way reStructuredText displays it."""
    body = line.rstrip()[:-2]
    if not body.strip():
        return ""
    if body[-1].isspace():
        return body.rstrip()
    return body + ":"


def remove_blocks(lines: list[str]) -> list[str]:
    """Drop directives, comments, literal blocks, doctests, tables and transitions.

    Dropped blocks are replaced by a blank line, so that they also end the paragraph before them.
    """
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if not stripped:
            kept.append("")
            i += 1
        elif stripped == ".." or stripped.startswith(".. "):
            kept.append("")
            i = skip_indented(lines, i + 1, indent_of(line))
        elif stripped.startswith((">>>", "...")):
            kept.append("")
            while i < len(lines) and not is_blank(lines[i]):
                i += 1
        elif stripped.endswith("::"):
            kept.append(strip_literal_marker(line))
            kept.append("")
            i = skip_indented(lines, i + 1, content_indent(line))
        elif SIMPLE_TABLE_BORDER.match(stripped):
            kept.append("")
            i = skip_simple_table(lines, i)
        elif stripped.startswith(("+-", "+=", "|")) or ADORNMENT.match(stripped):
            kept.append("")
            i += 1
        else:
            kept.append(line)
            i += 1
    return kept


def group_paragraphs(lines: list[str]) -> Iterator[str]:
    """Yield the paragraphs of a section, each joined into one line.

    A paragraph ends at a blank line, where the indentation changes (other than for the
    continuation lines of a list item) and, in a block that starts with a list item, at the
    start of the next item. The terms of definition lists are dropped.
    """
    paragraph: list[str] = []
    expected_indent = -1
    in_list = False
    for line in lines:
        if not line.strip():
            if paragraph:
                yield " ".join(paragraph)
            paragraph, expected_indent, in_list = [], -1, False
            continue
        stripped = line.strip()
        starts_item = not paragraph or (in_list and indent_of(line) < expected_indent)
        item = LIST_ITEM.match(stripped) if starts_item else None
        if paragraph and (item or indent_of(line) != expected_indent):
            is_term = len(paragraph) == 1 and not in_list and indent_of(line) > expected_indent
            if not is_term:
                yield " ".join(paragraph)
            paragraph = []
        if item:
            stripped = stripped[item.end() :]
            in_list = True
        paragraph.append(stripped)
        expected_indent = content_indent(line) if item else indent_of(line)


def role_text(role: str, content: str, titles: dict[str, str]) -> str:
    """Return the text Sphinx displays for an interpreted-text role.

    ``titles`` maps the labels of sections to their titles, for references without a title.
    """
    explicit = re.match(r"^(.*?)\s*<([^<>]*)>$", content, re.DOTALL)
    if explicit and explicit.group(1):
        return ESCAPE.sub(r"\1", explicit.group(1))
    text = ESCAPE.sub(r"\1", content)
    if role == "ref":
        return titles.get(text.lower(), text)
    if role in ("file", "samp"):
        # Braces mark a variable part; a backslash escapes a brace or a backslash.
        text = re.sub(r"\\([\\{}])|[{}]", lambda m: m.group(1) or "", text)
    if role == "pep":
        return "PEP " + text.split("#")[0]
    if role == "rfc":
        return "RFC " + text.split("#")[0]
    if role == "issue":
        return "bpo-" + text
    if role == "gh":
        return "gh-" + text
    if role == "abbr":
        return re.sub(r"\s*\(.*\)$", "", text)
    text = text.lstrip("!")
    if role in OBJECT_ROLES:
        if text.startswith("~"):
            text = text[1:].rsplit(".", 1)[-1]
        text = text.lstrip(".")
        if role in CALLABLE_ROLES and not text.endswith(")"):
            text += "()"
    return text


def clean_inline(text: str, titles: dict[str, str]) -> str:
    """Replace inline markup by the text it displays."""
    protected: list[str] = []

    def protect(value: str) -> str:
        protected.append(value)
        return f"\x00{len(protected) - 1}\x01"

    text = LITERAL.sub(lambda m: protect(m.group(1)), text)
    text = ROLE.sub(lambda m: protect(role_text(m.group(1), m.group(2), titles)), text)
    text = HYPERLINK.sub(r"\1", text)
    text = NAMED_REFERENCE.sub(r"\1", text)
    text = SIMPLE_REFERENCE.sub(r"\1", text)
    text = FOOTNOTE_REFERENCE.sub("", text)
    text = STRONG.sub(r"\1", text)
    text = EMPHASIS.sub(r"\1", text)
    text = INTERPRETED.sub(r"\1", text)
    text = SUBSTITUTION.sub(lambda m: SUBSTITUTIONS.get(m.group(1), m.group(1)), text)
    text = text.replace("\\ ", "")
    text = ESCAPE.sub(r"\1", text)
    text = PLACEHOLDER.sub(lambda m: protected[int(m.group(1))], text)
    return re.sub(r"\s+", " ", text).strip()


def section_paragraphs(section: list[str], titles: dict[str, str]) -> list[str]:
    """Return the cleaned paragraphs of one section."""
    paragraphs = (clean_inline(p, titles) for p in group_paragraphs(remove_blocks(section)))
    return [p for p in paragraphs if any(c.isalpha() for c in p)]


def file_documents(path: Path, titles: dict[str, str]) -> Iterator[list[str]]:
    """Yield the documents of one source file, skipping those that are too small."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for section in split_sections(lines):
        paragraphs = section_paragraphs(section, titles)
        if len(paragraphs) >= MIN_PARAGRAPHS and sum(map(len, paragraphs)) >= MIN_CHARS:
            yield paragraphs


def title_at(lines: list[str], i: int) -> str | None:
    """Return the title of the section that starts at line ``i``, if one does."""
    if i + 2 < len(lines) and ADORNMENT.match(lines[i]) and is_title_underline(lines[i + 1], lines[i + 2]):
        return lines[i + 1].strip()
    if i + 1 < len(lines) and is_title_underline(lines[i], lines[i + 1]):
        return lines[i].strip()
    return None


def section_titles(files: Iterable[Path]) -> dict[str, str]:
    """Map the lowercased labels placed just before section titles to the cleaned titles."""
    titles: dict[str, str] = {}
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            label = LABEL.match(line)
            if not label:
                continue
            j = i + 1
            while j < len(lines) and (is_blank(lines[j]) or LABEL.match(lines[j])):
                j += 1
            title = title_at(lines, j)
            if title is not None:
                titles[label.group(1).strip().lower()] = title
    return {label: clean_inline(title, {}) for label, title in titles.items()}


def source_files(sources: Path, include: Iterable[str]) -> list[Path]:
    """List the ``.rst.txt`` files under each included directory, each directory in sorted path order."""
    files: list[Path] = []
    for name in include:
        files.extend(sorted((sources / name).rglob("*.rst.txt"), key=Path.as_posix))
    return files


def build_corpus(files: Iterable[Path], titles: dict[str, str], max_bytes: int | None) -> Iterator[str]:
    """Yield the documents as text blocks, stopping before the output would exceed ``max_bytes``."""
    total = 0
    for path in files:
        for paragraphs in file_documents(path, titles):
            block = ("\n" if total else "") + "\n".join(paragraphs) + "\n"
            size = len(block.encode("utf-8"))
            if max_bytes is not None and total + size > max_bytes:
                return
            total += size
            yield block


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and write the corpus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", type=Path, help="the _sources directory of the HTML documentation")
    parser.add_argument(
        "--include",
        action="append",
        metavar="DIR",
        help="a subdirectory of SOURCES to read, in the order given (repeatable; default: all files)",
    )
    parser.add_argument("--max-bytes", type=int, help="stop before the output would exceed this many bytes")
    parser.add_argument(
        "--exclude-list",
        type=Path,
        help="a file naming source files to leave out, one path relative to SOURCES per line (for example the "
        "files a downstream task validates on)",
    )
    parser.add_argument("--out", type=Path, help="output file (default: standard output)")
    args = parser.parse_args(argv)

    if not args.sources.is_dir():
        parser.error(f"not a directory: {args.sources}")
    files = source_files(args.sources, args.include or ["."])
    if args.exclude_list:
        excluded = {line.strip() for line in args.exclude_list.read_text(encoding="utf-8").splitlines() if line.strip()}
        missing = sorted(excluded - {path.relative_to(args.sources).as_posix() for path in files})
        if missing:
            parser.error(f"{args.exclude_list} names files that are not among the inputs: {missing[:5]}")
        files = [path for path in files if path.relative_to(args.sources).as_posix() not in excluded]
    if not files:
        parser.error(f"no .rst.txt files found under {args.sources}")
    titles = section_titles(sorted(args.sources.rglob("*.rst.txt")))
    text = "".join(build_corpus(files, titles, args.max_bytes))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
