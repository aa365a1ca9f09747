"""Reading spec and population files safely: UTF-8 only, YAML aliases that expand refused, and
every parse error one line naming ``file:line:column``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class SpecError(ValueError):
    """The spec is invalid; the message says where and why, in one line."""


ALIAS_GROWTH_LIMIT = 100_000
"""Nodes YAML aliases may add to a document beyond its own size (or doubling it, if larger).

A "billion laughs" spec of 0.9 KB otherwise expands to gigabytes of candidates; ordinary
reuse (``params: *defaults``) stays far below this."""


SPEC_SIZE_LIMIT = 256 * 2**20
"""Bytes a spec file may hold: ``launch /dev/zero`` (or any endless stream) would otherwise be
read until the machine runs out of memory."""


class _CountingLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, noting where the first alias is (most specs have none)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.first_alias: yaml.Mark | None = None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.first_alias is None and self.check_event(yaml.AliasEvent):
            self.first_alias = self.peek_event().start_mark
        return super().compose_node(parent, index)


def read_text(path: Path) -> str:
    """The file's text; raises SpecError if it cannot be read, is a device, is larger than
    SPEC_SIZE_LIMIT or is not UTF-8."""
    try:
        # Non-blocking open: a FIFO without a writer reads as empty instead of hanging; a pipe
        # with one (`launch <(make_spec)`) still works, as reads block again below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(f"{path}: is a directory, not a file")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            raise SpecError(f"{path}: is a device or socket, not a file")
        os.set_blocking(fd, True)
        try:
            raw = file.read(SPEC_SIZE_LIMIT + 1)
        except OSError as exc:
            raise SpecError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(raw) > SPEC_SIZE_LIMIT:
        raise SpecError(f"{path}: larger than {SPEC_SIZE_LIMIT // 2**20} MiB; put the population "
                        "in a candidates_file (JSONL, streamed)")
    try:
        return raw.decode("utf-8-sig")  # a BOM some editors write is harmless
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"{path}: line {line}: {_not_utf8(raw, exc)}") from None


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        what = "it looks like UTF-16"
    else:
        what = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    return f"not UTF-8 text ({what}); save the file as UTF-8"


def read_document(path: Path) -> Any:
    """The parsed YAML (or ``.json``) document at ``path``; raises SpecError."""
    text = read_text(path)
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
        except RecursionError:
            raise SpecError(f"{path}: malformed JSON: nested too deeply") from None
    return load_yaml(text, path)


def load_yaml(text: str, path: Path) -> Any:
    """Safe YAML with aliases that expand refused; errors as ``file:line:col: problem``."""
    loader = _CountingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if loader.first_alias is not None:
            _check_alias_growth(node, loader.first_alias, path)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise SpecError(_yaml_problem(exc, path)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise SpecError(
            f"{path}:{line}: malformed YAML: character {exc.character!r} is not allowed "
            f"({exc.reason})"
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise SpecError(f"{path}: malformed YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError, path: Path) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        since = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
        problem += f" ({exc.context}{since})"
    return f"{where}: malformed YAML: {problem}"


def _check_alias_growth(root: yaml.Node, first_alias: yaml.Mark, path: Path) -> None:
    """Refuse a document whose aliases, expanded, add more than ALIAS_GROWTH_LIMIT nodes.

    Counted on the composed graph, where an alias is the anchored node itself: one pass over
    the distinct nodes, nothing expanded.
    """
    sizes: dict[int, int] = {}
    expanded = _expanded_size(root, sizes)
    distinct = len(sizes)
    if expanded - distinct > max(ALIAS_GROWTH_LIMIT, distinct):
        raise SpecError(
            f"{path}:{first_alias.line + 1}:{first_alias.column + 1}: YAML aliases expand "
            f"{distinct:,} nodes to {expanded:,} (an alias bomb?); write the values out, or use "
            "a candidates_file"
        )


_IN_PROGRESS = -1


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    known = sizes.get(id(node))
    if known == _IN_PROGRESS:
        mark = node.start_mark
        raise yaml.MarkedYAMLError(problem="an alias refers to a node that contains it",
                                   problem_mark=mark)
    if known is not None:
        return known
    sizes[id(node)] = _IN_PROGRESS
    size = 1 + sum(_expanded_size(child, sizes) for child in _children(node))
    sizes[id(node)] = size
    return size


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """A text file's lines, numbered from 1; raises SpecError at the first that is not UTF-8."""
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SpecError(f"{path}: line {number}: {_not_utf8(raw, exc)}") from None
                yield number, text.removeprefix("\ufeff") if number == 1 else text
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read ({exc.strerror})") from None
