"""The recommended axolotl keys as YAML: a new fragment's text, or merged into an existing axolotl
config's text line by line (every other line byte-identical), checked. Pure; the careful write of
the user's file is attn_installer.configfile."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from attn_installer.errors import ConfigError

__all__ = ["MergeOutcome", "MergeResult", "conflicting_keys", "merge_yaml", "render_yaml", "yaml_error"]


def render_yaml(config: Mapping[str, Any], comments: Sequence[str], header: Sequence[str]) -> str:
    """Render the keys in order with a header and backend comments above them."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `attn-install --help` fast

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # a hub kernel path with its commit stays on one line
    buf = io.StringIO()
    yaml.dump(dict(config), buf)
    lines = [f"# {h}" for h in header] + [f"# {c}" for c in comments]
    return "\n".join(lines) + ("\n" if lines else "") + buf.getvalue()


# --------------------------------------------------------------------------- merge into an existing config


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_yaml` did: the new text and the top-level keys it set or removed."""

    text: str
    changed: tuple[str, ...]
    """Keys written with a new value (added or replaced), in config order."""
    removed: tuple[str, ...]
    """Attention keys of the other form (or another backend) that were deleted."""


@dataclass(frozen=True)
class MergeOutcome:
    """What :func:`merge_file` did to the file on disk."""

    path: Path
    result: MergeResult
    diff: str
    """Unified diff of the change; empty when nothing changed."""
    backup: Optional[Path]
    """The copy of the original file; None when nothing was written."""


def conflicting_keys(config: Mapping[str, Any], attention_keys: Sequence[str]) -> tuple[str, ...]:
    """Attention keys to delete when *config* is written: every one it does not set itself.

    Nothing is deleted when *config* selects no attention key (an axolotl too old to select
    the backend): the user's own choice then stays.
    """
    if not any(k in config for k in attention_keys):
        return ()
    return tuple(k for k in attention_keys if k not in config)


def yaml_error(name: str, e: Exception, prefix: str = "", suffix: str = "") -> ConfigError:
    """One line for a YAML error: ``name:line:col: problem (context at line N)``."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e).splitlines()[0]
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and problem != context and cmark is not None:
        problem = f"{problem} ({context} at line {cmark.line + 1})"
    return ConfigError(f"{where}: {prefix}{problem}{suffix}")


def _yaml_error(name: str, e: Exception) -> ConfigError:
    return yaml_error(name, e, suffix="; the file was not changed")


def _parse(text: str, name: str) -> tuple[Any, Any]:
    """(round-trip data, composed root node) or ConfigError naming file:line:col."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `attn-install --help` fast
    from ruamel.yaml.error import YAMLError  # noqa: PLC0415

    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
        node = yaml.compose(text)
    except YAMLError as e:
        raise _yaml_error(name, e) from None
    if node is not None and type(node).__name__ != "MappingNode":
        m = node.start_mark
        raise ConfigError(f"{name}:{m.line + 1}:{m.column + 1}: the top level is not a mapping of "
                          "axolotl keys; the file was not changed")
    if node is not None and node.flow_style:
        m = node.start_mark
        raise ConfigError(f"{name}:{m.line + 1}:{m.column + 1}: a flow-style top level ({{...}}) "
                          "cannot be merged line by line; the file was not changed")
    return data, node


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool):
        return type(current).__name__ in ("bool", "ScalarBoolean") and bool(current) is wanted
    return type(current) is type(wanted) and bool(current == wanted)


def _spans(node: Any, lines: Sequence[str]) -> dict[str, tuple[int, int, str]]:
    """Top-level key -> (first line, last line, what follows a one-line value), 0-based, inclusive.

    The tail is the end-of-line comment (with its spacing) that a rewritten line keeps.
    """
    spans: dict[str, tuple[int, int, str]] = {}
    if node is None:
        return spans
    for key, value in node.value:
        if not isinstance(key.value, str):
            continue
        first = key.start_mark.line
        end = value.end_mark
        last = max(first, end.line if end.column > 0 else end.line - 1)
        # a block scalar's end mark runs on over blank lines and comments that follow it
        while last > first and (not lines[last].strip() or lines[last].lstrip().startswith("#")):
            last -= 1
        tail = lines[first][end.column:].rstrip("\r\n") if end.line == first == last else ""
        spans[key.value] = (first, last, tail if tail.strip() else "")
    return spans


def _render_line(key: str, value: Any, indent: str, nl: str) -> str:
    from ruamel.yaml import YAML  # noqa: PLC0415

    yaml = YAML()
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump({key: value}, buf)
    return indent + buf.getvalue().rstrip("\n") + nl


def merge_yaml(text: str, config: Mapping[str, Any], remove: Sequence[str], *, name: str = "<config>",
               comments: Sequence[str] = ()) -> MergeResult:
    """Set *config*'s top-level keys in an axolotl YAML text and delete the *remove* keys.

    Only the lines of those keys change: every other line (comments, blank lines, key order,
    quoting, indentation) stays byte for byte. ruamel's round-trip parser gives each key's
    lines; a full round-trip dump would re-indent sequences and rewrite ``True`` as ``true``.
    A key that already holds the value is left untouched; a new key takes the place of the
    first removed key, else it goes at the end. *comments* go above the first new line.
    Raises ConfigError (``name:line:col: problem``) for text that does not parse.
    """
    data, node = _parse(text, name)
    current: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    lines = text.splitlines(keepends=True)
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    indent = " " * (node.start_mark.column if node is not None else 0)
    spans = _spans(node, lines)
    changed = [k for k, v in config.items() if not (k in current and _same(current[k], v))]
    removed = [k for k in remove if k in spans]
    if not changed and not removed:
        return MergeResult(text, (), ())
    replace: dict[int, list[str]] = {}  # first line of a span -> its new lines
    drop: set[int] = set()
    for key in removed:
        first, last, _ = spans[key]
        drop.update(range(first, last + 1))
        replace.setdefault(first, [])
    appended: list[str] = []
    slots = sorted(spans[k][0] for k in removed)
    note = [f"{indent}# {c}{nl}" for c in comments]
    for key in changed:
        new = _render_line(key, config[key], indent, nl)
        if key in spans:
            first, last, tail = spans[key]
            drop.update(range(first, last + 1))
            replace[first] = [*note, new.rstrip("\r\n") + tail + nl]
        elif slots:
            replace[slots.pop(0)] = [*note, new]
        else:
            appended.extend([*note, new])
        note = []
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in replace:
            out.extend(replace[i])
        if i not in drop:
            out.append(line)
    if appended and out and not out[-1].endswith(("\n", "\r")):
        out[-1] += nl
    merged = "".join(out + appended)
    _check(merged, name, current, config, remove)
    return MergeResult(merged, tuple(changed), tuple(removed))


def _check(merged: str, name: str, before: Mapping[str, Any], config: Mapping[str, Any],
           removed: Sequence[str]) -> None:
    """Re-parse the result: the keys hold their values, removed keys are gone, nothing else moved."""
    after, _ = _parse(merged, name)
    after = after if isinstance(after, Mapping) else {}
    problems = [k for k, v in config.items() if k not in after or not _same(after[k], v)]
    problems += [k for k in removed if k in after]
    problems += [k for k, v in before.items() if k not in config and k not in removed
                 and (k not in after or after[k] != v)]
    if problems:
        raise ConfigError(f"{name}: cannot merge {', '.join(problems)} line by line "
                          "(YAML anchors or merge keys?); edit the file by hand; it was not changed")
