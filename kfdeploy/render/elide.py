"""Render without pushing CRD schemas through kustomize.

CustomResourceDefinition schemas are 94% of a rendered Kubeflow release (11.1 of 11.8 MB for
26.03), and kustomize spends most of its time parsing and re-printing them (kserve alone: 2.6 s
for 3.5 MB) although no transformer of the release looks inside them. So kfdeploy gives kustomize
a copy of the release in which every `openAPIV3Schema:` block of a CRD is a one-line marker,

    openAPIV3Schema:
      x-kfdeploy-elided: e<sha256 of the block>

and puts the original block back into kustomize's output afterwards. The blocks live in a
content-addressed store (`<cache>/render/schemas/<id>.yaml`), and are parsed to JSON only when
something needs them (apply, diff, a size check), once per content, shared by every environment
and release that has the same schema.

Safe by construction, and checked where it cannot be:
- Only blocks whose extent is certain are elided: inside a document whose top level says
  `kind: CustomResourceDefinition`, in block style, no multi-line quoted scalars, no anchors or
  aliases, no tabs or CR line ends. Anything else stays as it is.
- A kustomization that reaches into a schema (a JSON patch on .../openAPIV3Schema/..., a strategic
  merge into it, a replacement) either fails on the marker or leaves other keys beside it;
  `markers` finds the second, and the engine then builds that component from the untouched
  release. Replacing or deleting a whole schema works the same either way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kfdeploy.errors import RenderError
from kfdeploy.files import write_atomic

log = logging.getLogger(__name__)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MARKER = "x-kfdeploy-elided"
# Bump when the elided tree's layout or the choice of what is elided changes.
ELIDE_VERSION = "1"

_MARKER_IN_OUTPUT = re.compile(
    r"^( *)(openAPIV3Schema:)\n( +)" + re.escape(MARKER) + r": (e[0-9a-f]{24})\n", re.M
)
_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class ElisionError(RenderError):
    """kustomize's output for a component does not carry the markers the way they went in."""


# ---- the store ------------------------------------------------------------------------------------


class SchemaStore:
    """Schema blocks by content id: `<id>.yaml` (the block, moved to column 0) and, once
    something needed it, `<id>.json` (the parsed schema, compact)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, block_id: str, text: str) -> None:
        path = self.root / f"{block_id}.yaml"
        if not path.is_file():
            write_atomic(path, text)

    def text(self, block_id: str) -> str:
        try:
            return (self.root / f"{block_id}.yaml").read_text(encoding="utf-8")
        except OSError as exc:
            raise RenderError(
                f"schema {block_id} is missing from {self.root}; render again with --no-cache"
            ) from exc

    def size_of(self, block_id: str) -> int:
        """Bytes of the block's YAML."""
        try:
            return (self.root / f"{block_id}.yaml").stat().st_size
        except OSError:
            return 0

    def has_json(self, block_id: str) -> bool:
        return (self.root / f"{block_id}.json").is_file()

    def parse(self, ids: Iterable[str], convert: Any) -> None:
        """Parse the blocks not parsed before with `convert` ({id: YAML} -> {id: JSON text})."""
        missing = {i: self.text(i) for i in sorted(set(ids)) if not self.has_json(i)}
        if missing:
            for block_id, text in convert(missing).items():
                # The size first: a .json without its .size is never taken for parsed.
                write_atomic(self.root / f"{block_id}.size", str(python_json_size(text)))
                write_atomic(self.root / f"{block_id}.json", text)

    def json_texts(self, ids: Iterable[str], convert: Any) -> dict[str, str]:
        """Each schema as compact JSON text, parsing the ones never parsed before."""
        wanted = sorted(set(ids))
        self.parse(wanted, convert)
        return {i: (self.root / f"{i}.json").read_text(encoding="utf-8") for i in wanted}

    def json_sizes(self, ids: Iterable[str], convert: Any) -> dict[str, int]:
        """Each schema's length as `json.dumps(schema, separators=(",", ":"))`."""
        wanted = sorted(set(ids))
        self.parse(wanted, convert)
        return {i: int((self.root / f"{i}.size").read_text()) for i in wanted}


def python_json_size(text: str) -> int:
    """len(json.dumps(json.loads(text), separators=(",", ":"))) for JSON as Go (kubectl) writes
    it, mostly without parsing: Go writes <, > and & as \\u003c.. and non-ASCII as is, Python
    the other way round. Texts with floats (whose digits Go and Python may print differently)
    or escaped backslashes (which could look like those escapes) are parsed."""
    if "\\\\" in text or _FLOAT.search(text):
        return len(json.dumps(json.loads(text), separators=(",", ":")))
    size = len(text) - 5 * sum(text.count(e) for e in ("\\u003c", "\\u003e", "\\u0026"))
    size -= 4 * sum(text.count(e) for e in ("\\u0008", "\\u000c"))  # Python writes \\b, \\f
    if not text.isascii():
        size += sum(11 if ord(c) > 0xFFFF else 5 for c in text if ord(c) > 0x7F)
    return size


# A number with a fraction or an exponent, where JSON has values: after :, [ or ,.
_FLOAT = re.compile(r"[:\[,]-?\d+(?:\.\d+)?[eE.]")


# ---- which files to elide -------------------------------------------------------------------------


class Reach:
    """Walks kustomizations the way kustomize loads them, as far as which files they read.

    `elidable` gives the files loaded as resources by the kustomizations reachable from the
    roots (folders relative to the release), minus any file also loaded another way (a patch,
    `crds:`, a plugin's config) and minus everything below a kustomization that says anything
    about schemas (a JSON patch into one, a replacement, a fieldSpec): only resources nobody
    looks into are elided."""

    def __init__(self, release_root: Path) -> None:
        self.root = release_root.resolve()
        self._parsed: dict[Path, dict[str, Any] | None] = {}
        self.folders: set[Path] = set()  # every kustomization folder visited

    def elidable(self, groups: dict[str, list[str]]) -> tuple[set[Path], dict[str, set[Path]]]:
        """The elidable files for all groups of roots together, and each group's resources."""
        resources: set[Path] = set()
        other: set[Path] = set()
        touched: set[Path] = set()
        reached: dict[str, set[Path]] = {}
        for name, roots in groups.items():
            mine: set[Path] = set()
            seen: set[tuple[Path, bool]] = set()
            for r in roots:
                self._visit((self.root / r).resolve(), False, seen, mine, other, touched)
            reached[name] = mine
            resources |= mine
        return {f for f in resources - other - touched if _may_hold_schemas(f)}, reached

    def _kustomization(self, folder: Path) -> dict[str, Any] | None:
        if folder not in self._parsed:
            k: Any = None
            kfile = next((folder / n for n in _KUSTOMIZATION_FILES if (folder / n).is_file()), None)
            if kfile is not None:
                try:
                    k = yaml.load(
                        kfile.read_text(encoding="utf-8", errors="replace"), Loader=_Loader
                    )
                except yaml.YAMLError:
                    k = None  # kustomize will say what is wrong; nothing here gets elided
            self._parsed[folder] = k if isinstance(k, dict) else None
        return self._parsed[folder]

    def _visit(
        self,
        folder: Path,
        under_schema_talk: bool,
        seen: set[tuple[Path, bool]],
        reached: set[Path],
        other: set[Path],
        touched: set[Path],
    ) -> None:
        if (folder, under_schema_talk) in seen or not folder.is_relative_to(self.root):
            return
        seen.add((folder, under_schema_talk))
        k = self._kustomization(folder)
        if k is None:
            return
        self.folders.add(folder)
        # Files read for any other purpose (patches, CRD name references, plugin configs,
        # replacement sources, configurations) are never elided, and their text, like the
        # kustomization's own, decides for everything below it.
        talk = under_schema_talk or _mentions_schema(
            {f: v for f, v in k.items() if f not in ("resources", "bases", "components")}
        )
        for path in _side_files(k, folder):
            other.add(path)
            with contextlib.suppress(OSError):
                talk = (
                    talk or "schema" in path.read_text(encoding="utf-8", errors="replace").lower()
                )
        for field in ("resources", "bases", "components"):
            for entry in _strings(k.get(field)):
                if "://" in entry or entry.startswith("git@"):
                    continue
                target = (folder / entry).resolve()
                if target.is_dir():
                    self._visit(target, talk, seen, reached, other, touched)
                elif target.is_file():
                    reached.add(target)
                    if talk:
                        touched.add(target)


def _may_hold_schemas(path: Path) -> bool:
    try:
        raw = path.read_bytes()
    except OSError:
        return False
    return b"openAPIV3Schema" in raw and b"CustomResourceDefinition" in raw


def _mentions_schema(value: Any) -> bool:
    return "schema" in json.dumps(value, default=str).lower()


def _side_files(k: dict[str, Any], folder: Path) -> Iterator[Path]:
    entries: list[str] = []
    entries += _strings(k.get("patchesStrategicMerge"))
    entries += _strings(k.get("crds"))
    entries += _strings(k.get("configurations"))
    for field in ("generators", "transformers", "validators"):
        entries += _strings(k.get(field))
    for field in ("patches", "patchesJson6902", "replacements"):
        for item in k.get(field) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                entries.append(item["path"])
    openapi = k.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        entries.append(openapi["path"])
    for entry in entries:
        if "\n" in entry:
            continue  # an inline patch: its text is in the kustomization itself
        target = (folder / entry).resolve()
        if target.is_file():
            yield target
        elif target.is_dir():
            for dirpath, _, filenames in os.walk(target):
                yield from (Path(dirpath) / f for f in filenames)


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


# ---- the elided copy of a release -----------------------------------------------------------------


def prepare(
    release_root: Path,
    dest: Path,
    store: SchemaStore,
    files: set[Path],
    folders: set[Path] | None = None,
) -> Path:
    """The copy of release_root at dest in which `files` have their CRD schemas elided (made
    once; later calls find it).

    Real folders are those holding an elided file, the kustomization `folders` (with all
    below them), and every folder above those; in them, other files are hard-linked where the
    filesystem allows (kustomize refuses symlinked files), else copied. Every other folder is a
    symlink to the release's own (creating all ~500 folders would cost more than the rest):
    kustomize reads through it as from the release, and resolves paths from there, which is
    why a kustomization that leads to an elided file must sit in a real folder. Without
    `folders`, every folder is real."""
    if (dest / ".complete").is_file():
        return dest
    src_root = release_root.resolve()
    texts: dict[str, str] = {}
    for f in sorted(files):
        text = _elided_file(f, store)
        if text is not None:
            texts[os.path.relpath(f, src_root)] = text
    real = {"."}
    # Everything below a kustomization folder is real too: it may load files from there
    # (patches/, base files), and kustomize refuses a file reached through a symlink.
    for top in [src_root] if folders is None else sorted(folders):
        real |= {os.path.relpath(d, src_root) for d, _, _ in os.walk(top)}
    # A file's folder, or a folder itself (named through a child): each with all above it.
    for rel in [*texts, *(f"{os.path.relpath(d, src_root)}/-" for d in folders or ())]:
        real.update(str(p) for p in PurePosixPath(rel).parents)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        for rel_dir in sorted(real, key=lambda d: (d.count("/"), d)):
            out_dir = tmp if rel_dir == "." else tmp / rel_dir
            # Never write through a symlink into the release itself.
            if rel_dir != "." and (
                out_dir.is_symlink() or not out_dir.parent.resolve().is_relative_to(tmp.resolve())
            ):
                raise RenderError(f"elided copy: {rel_dir} would leave {tmp}")
            out_dir.mkdir(exist_ok=True)
            src_dir = src_root / rel_dir
            for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
                rel = str(PurePosixPath(rel_dir) / entry.name)
                if entry.is_dir():
                    if rel not in real:
                        (out_dir / entry.name).symlink_to(src_dir / entry.name, True)
                elif rel in texts:
                    (out_dir / entry.name).write_text(texts[rel], encoding="utf-8")
                else:
                    _link_or_copy(Path(entry.path), out_dir / entry.name)
        (tmp / ".complete").write_text(f"elided files: {len(texts)}\n", encoding="utf-8")
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / ".complete").is_file():  # not a concurrent render that won
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.debug("elided copy of %s at %s (%d files rewritten)", release_root, dest, len(texts))
    return dest


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=True)
    except OSError:
        shutil.copyfile(src, dst)


# The scans below run over every CRD a release renders (11 MB for 26.03); `str.find` is ten
# times faster than `re` at that, so patterns are found by their literal parts first.
_FIRST_CONTENT = re.compile(r"\n( *)(?=[^ \n#])")
_SCHEMA_KEY = "openAPIV3Schema:"
_CRD_KIND = "\nkind: CustomResourceDefinition"


def _elided_file(path: Path, store: SchemaStore) -> str | None:
    """The file with its CRD schema blocks replaced by markers, or None to keep it as it is."""
    raw = path.read_bytes()
    if b"openAPIV3Schema" not in raw or b"CustomResourceDefinition" not in raw:
        return None
    try:
        text = "\n" + raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\r" in text or "\ufeff" in text:
        return None
    out: list[str] = []
    pos = 0
    for start, end in _documents(text):
        kind = text.find(_CRD_KIND, start, end)
        if kind < 0 or text[kind + len(_CRD_KIND) : kind + len(_CRD_KIND) + 1] not in (
            "\n",
            " ",
            "",
        ):
            continue
        i = start
        while (k := text.find(_SCHEMA_KEY, i, end)) >= 0:
            i = k + len(_SCHEMA_KEY)
            line_start = text.rfind("\n", 0, k)
            key_end = text.find("\n", k)
            if key_end < 0 or text[line_start + 1 : k].strip(" "):
                continue  # not a key at the start of its line
            rest = text[i:key_end].strip(" ")
            if rest and not rest.startswith("#"):
                continue  # a value on the key's line (flow style): nothing worth eliding
            indent = k - line_start - 1
            found = _block(text, indent, key_end, end)
            if found is None:
                continue
            block_end, block = found
            block_id = "e" + hashlib.sha256(block.encode()).hexdigest()[:24]
            store.put(block_id, block)
            out.append(text[pos:key_end])
            out.append(f"\n{' ' * (indent + 2)}{MARKER}: {block_id}")
            pos = i = block_end
    if not out:
        return None
    out.append(text[pos:])
    return "".join(out)[1:]


def _documents(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) offsets of each YAML document in a stream (text starts with a newline);
    each document starts at a newline."""
    cuts = []
    for sep in ("\n---", "\n..."):
        i = 0
        while (i := text.find(sep, i)) >= 0:
            if text[i + 4 : i + 5] in ("", "\n", " "):
                cuts.append(i)
            i += 4
    start = 0
    for cut in sorted(cuts):
        yield start, cut
        start = text.find("\n", cut + 4)
        if start < 0:
            return
    yield start, len(text)


def _block(text: str, indent: int, key_end: int, doc_end: int) -> tuple[int, str] | None:
    """Where the block under an `openAPIV3Schema:` key ends (the newline before the next line
    that is not part of it) and its text; None when its extent or meaning is not certain from
    the text alone."""
    # The block is every following line that is blank, a comment, or indented deeper than the
    # key; the first other line ends it (YAML ends block scalars and plain multi-line scalars
    # there too; quoted ones are checked below).
    m = _line_at_most(indent).search(text, key_end, doc_end)
    end = m.start() if m else doc_end - (text[doc_end - 1 : doc_end] == "\n")
    first = _FIRST_CONTENT.search(text, key_end, end)
    if first is None:
        return None
    base = len(first.group(1))
    if base <= indent or text.startswith("- ", first.end()):
        return None  # not a block mapping under the key
    if _line_at_most(base - 1).search(text, key_end, end):
        return None  # a line left of the block's margin: keep the block as it is
    block = text[key_end + 1 : end]
    if "\t" in block or _keeps_trailing_newlines(block) or _has_node_property(block):
        return None  # tabs: YAML's rules for them differ by context; see the two checks
    for opener in _QUOTE_OPENERS:
        j = 0
        while (j := block.find(opener, j)) >= 0:
            j += len(opener)
            if _closing_quote(block, j, opener[-1]) < 0:
                return None  # a quoted scalar running past the block: its extent is not certain
    # Moved to column 0: every content line has at least `base` spaces; blank and comment lines
    # left of the margin keep theirs, which YAML ignores.
    return end, ("\n" + block).replace("\n" + " " * base, "\n")[1:].rstrip("\n") + "\n"


# Where a value starts with a quote, an anchor or an alias: after `key:` or a sequence dash
# (stricter than YAML: a dash or colon inside text matches too, which only keeps a block as is).
_QUOTE_OPENERS = (": '", ': "', "- '", '- "')


def _has_node_property(block: str) -> bool:
    """An anchor or alias (`&name`, `*name`) where a value starts: the other end of it may lie
    outside the block. (Stricter than YAML: any `: *x`, `- *x`, `[*x` or `,*x` counts.)"""
    for sigil in "&*":
        i = 0
        while (i := block.find(sigil, i)) >= 0:
            before = block[max(0, i - 2) : i]
            i += 1
            if block[i : i + 1] in _NOT_A_NAME:
                continue
            if before[-1:] in ("[", "{", ",") or before in (": ", "- ", ", "):
                return True
    return False


_NOT_A_NAME = ("", " ", "\n", ",", "[", "]", "{", "}", "*", "&")


def _keeps_trailing_newlines(block: str) -> bool:
    """A block scalar with "keep" chomping (`|+`, `>2+`): its trailing blank lines are content."""
    i = 0
    while (i := block.find("+", i)) >= 0:
        before = block[max(0, i - 2) : i]
        if before[-1:] in ("|", ">") or (before[-1:].isdigit() and before[:1] in ("|", ">")):
            return True
        i += 1
    return False


@functools.cache
def _line_at_most(indent: int) -> re.Pattern[str]:
    """A line holding content (not blank, not a comment) indented by `indent` spaces or fewer."""
    return re.compile(r"\n {0,%d}(?=[^ \n#])" % indent)  # noqa: UP031 (braces are regex here)


def _closing_quote(text: str, start: int, quote: str) -> int:
    """Offset of the quote closing a scalar whose text starts at `start`, or -1."""
    i = start
    while True:
        j = text.find(quote, i)
        if j < 0:
            return -1
        if quote == "'":
            if text.startswith("''", j):  # '' is an escaped quote
                i = j + 2
                continue
            return j
        backslashes = (j - i) - len(text[i:j].rstrip("\\"))
        if backslashes % 2 == 0:
            return j
        i = j + 1


# ---- kustomize's output ---------------------------------------------------------------------------


def markers(stream: str) -> list[str]:
    """The ids of the markers in kustomize's output, after checking each still stands alone
    under its key (a patch that merged into a schema would have left keys beside it)."""
    found = []
    for m in _MARKER_IN_OUTPUT.finditer(stream):
        if len(m.group(3)) <= len(m.group(1)):
            raise ElisionError(f"schema marker {m.group(4)} is not under its key")
        nxt = stream[m.end() : stream.find("\n", m.end())]
        if nxt.strip() and len(nxt) - len(nxt.lstrip(" ")) >= len(m.group(3)):
            raise ElisionError(f"schema {m.group(4)} was changed by the kustomization")
        found.append(m.group(4))
    if stream.count(MARKER) != len(found):
        raise ElisionError("a schema marker was moved or changed by the kustomization")
    return found


def splice(stream: str, store: SchemaStore) -> str:
    """kustomize's output with every marker replaced by its schema block."""

    def put_back(m: re.Match[str]) -> str:
        pad = m.group(3)
        body = pad + store.text(m.group(4))[:-1].replace("\n", "\n" + pad) + "\n"
        blank = "\n" + pad + "\n"
        body = body.replace(blank, "\n\n").replace(blank, "\n\n")  # twice: runs of blanks
        return f"{m.group(1)}{m.group(2)}\n{body}"

    markers(stream)
    return _MARKER_IN_OUTPUT.sub(put_back, stream)


# ---- parsed objects -------------------------------------------------------------------------------


def marker_paths(
    node: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, id) of every elided schema in a parsed object."""
    if isinstance(node, dict):
        if len(node) == 1 and MARKER in node:
            yield path, str(node[MARKER])
            return
        for k, v in node.items():
            yield from marker_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from marker_paths(v, (*path, i))


def fill(obj: dict[str, Any], schemas: dict[str, str]) -> None:
    """Replace every marker in obj with its schema (in place; each a fresh copy)."""
    for path, block_id in list(marker_paths(obj)):
        parent: Any = obj
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = json.loads(schemas[block_id])


def json_size(obj: dict[str, Any], schemas: dict[str, int]) -> int:
    """Bytes of obj as compact JSON with its schemas filled in, from each schema's own size."""
    size = len(json.dumps(obj, separators=(",", ":")))
    for _, block_id in marker_paths(obj):
        size += schemas[block_id] - len(json.dumps({MARKER: block_id}, separators=(",", ":")))
    return size
