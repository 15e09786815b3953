"""Loading a policy: the main file, then its drop-ins, into one Policy or one PolicyError.

Drop-ins are the ``*.yaml`` files of the drop-in folder (default: ``policy.d`` next to the main
file) in lexical order of their names, skipping hidden files; their rules come after the main
file's, so the main file's rules win.  Every file is read and checked even after a problem, and
all problems are reported together.
"""

from __future__ import annotations

import codecs
import stat
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from daxd.policy import yamlload
from daxd.policy.document import (
    LAYOUT_DEVICE_KEYS,
    LAYOUT_KEYS,
    MEMDEV_KEYS,
    REGION_KEYS,
    RULE_KEYS,
    SELECTOR_KEYS,
    TOP_KEYS,
    PolicyDocument,
)
from daxd.policy.errors import Diagnostic, PolicyError
from daxd.policy.layouts import LAYOUT_DEVICE_HINTS, LAYOUT_HINTS, LayoutLedger
from daxd.policy.model import Policy, Rule
from daxd.policy.regions import MEMDEV_HINTS, REGION_HINTS, RegionLedger
from daxd.policy.selectors import SELECTOR_HINTS
from daxd.policy.source import Source
from daxd.policy.trust import distrust
from daxd.policy.values import FieldProblem, describe, did_you_mean, quote

MAX_FILE_SIZE = 256 << 10  # ~2000 rules; bounds parse time (~1 s) and memory
MAX_DIAGNOSTICS_PER_FILE = 50


def load_policy(path: Path, dropin_dir: Path | None = None, *, strict: bool = True) -> Policy:
    """The policy in ``path`` and its drop-ins; raises PolicyError listing every problem.

    ``strict``: refuse files others could have written (see daxd.policy.trust).
    """
    policy, diagnostics = _load(path, dropin_dir, strict)
    if diagnostics:
        raise PolicyError(diagnostics)
    return policy


def check_policy(
    path: Path, dropin_dir: Path | None = None, *, strict: bool = True
) -> list[Diagnostic]:
    """Every problem of the policy, in file order; empty when it loads."""
    return _load(path, dropin_dir, strict)[1]


def _load(path: Path, dropin_dir: Path | None, strict: bool) -> tuple[Policy, list[Diagnostic]]:
    if dropin_dir is None:
        dropin_dir = path.parent / "policy.d"
    files, diagnostics = _files(path, dropin_dir)
    rules: list[Rule] = []
    named: dict[str, str] = {}  # rule name -> where it is first used
    regions = RegionLedger()
    layouts = LayoutLedger()
    for file in files:
        problems: list[Diagnostic] = []
        reason = distrust(file, path.parent) if strict else None
        if reason is not None:
            diagnostics.append(Diagnostic(str(file), None, None, reason))
            continue
        loaded = _load_file(file, problems)
        if loaded is not None:
            source, doc, document = loaded
            for index, entry in enumerate(document.regions):
                location = f"{source.name}:{doc.value_pos(('regions', index))[0]}"
                for loc, message in regions.add(entry, location):
                    pos = doc.value_pos(("regions", index, *loc))
                    problems.append(source.diagnostic(*pos, message))
            for index, layout in enumerate(document.layouts):
                location = f"{source.name}:{doc.value_pos(('layouts', index))[0]}"
                at = tuple(
                    f"{source.name}:{doc.value_pos(('layouts', index, 'devices', i))[0]}"
                    for i in range(len(layout.devices))
                )
                for loc, message in layouts.add(layout, location, at):
                    pos = doc.value_pos(("layouts", index, *loc))
                    problems.append(source.diagnostic(*pos, message))
            for index, spec in enumerate(document.rules):
                location = f"{source.name}:{doc.value_pos(('rules', index))[0]}"
                name = spec.name or f"rule {len(rules) + 1}"
                if name in named:
                    pos = doc.value_pos(("rules", index, "name"))
                    message = f"rule name {quote(name)} is already used at {named[name]}"
                    problems.append(source.diagnostic(*pos, message))
                named.setdefault(name, location)
                rule = Rule(
                    name=name,
                    location=location,
                    selector=spec.selector,
                    mode=spec.mode,
                    zone=spec.zone,
                    memmap_on_memory=spec.memmap_on_memory,
                    online=spec.online,
                    allow_pmem_data_loss=spec.allow_pmem_data_loss,
                )
                rules.append(rule)
        diagnostics += _in_order(str(file), problems)
    policy = Policy(
        rules=tuple(rules),
        sources=tuple(str(f) for f in files),
        regions=tuple(regions.regions),
        layouts=tuple(layouts.layouts),
    )
    return policy, diagnostics


def _load_file(
    file: Path, problems: list[Diagnostic]
) -> tuple[Source, yamlload.Document, PolicyDocument] | None:
    """Read, parse and validate one file, adding its problems; None when it has no rules to
    offer (its YAML or its schema is broken)."""
    source = _read(file)
    if isinstance(source, Diagnostic):
        problems.append(source)
        return None
    doc, found = yamlload.parse(source)
    problems += found
    if doc is None:
        return None
    try:
        document = PolicyDocument.model_validate({} if doc.value is None else doc.value)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            loc = tuple(error["loc"])
            if not doc.was_reported(loc):
                at_key, message = _explain(loc, error)
                pos = doc.key_pos(loc) if at_key else doc.value_pos(loc)
                problems.append(source.diagnostic(*pos, message))
        return None
    return source, doc, document


def _files(path: Path, dropin_dir: Path) -> tuple[list[Path], list[Diagnostic]]:
    try:
        entries = sorted(dropin_dir.iterdir(), key=lambda p: p.name)
    except FileNotFoundError:
        return [path], []  # no drop-in folder: nothing to add
    except OSError as err:
        return [path], [Diagnostic(str(dropin_dir), None, None, _os_message(err))]
    problems = []
    dropins = []
    for entry in entries:
        if entry.name.startswith("."):
            continue  # editors' swap and backup files
        if entry.name.endswith(".yaml"):
            dropins.append(entry)
        elif entry.name.endswith(".yml"):
            # Loud rather than silently ignoring a file of rules.
            message = "not loaded: drop-in files must be named *.yaml"
            problems.append(Diagnostic(str(entry), None, None, message))
    return [path, *dropins], problems


def _os_message(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, NotADirectoryError):
        return "not a directory"
    return f"cannot read: {err.strerror or err}"


def _read(file: Path) -> Source | Diagnostic:
    name = str(file)
    try:
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            return Diagnostic(name, None, None, "is a directory, not a policy file")
        if not stat.S_ISREG(info.st_mode):
            return Diagnostic(name, None, None, "not a regular file")
        with file.open("rb") as stream:
            data = stream.read(MAX_FILE_SIZE + 1)
    except OSError as err:
        return Diagnostic(name, None, None, _os_message(err))
    except ValueError:  # a NUL byte in the path
        return Diagnostic(name, None, None, "not a valid file name")
    if len(data) > MAX_FILE_SIZE:
        message = f"larger than {MAX_FILE_SIZE // 1024} KiB; is this a policy file?"
        return Diagnostic(name, None, None, message)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return Source(name, data.decode("utf-8"))
    except UnicodeDecodeError as err:
        shown = Source(name, data.decode("utf-8", errors="replace"))
        index = len(data[: err.start].decode("utf-8"))
        message = f"not UTF-8 text (byte 0x{data[err.start]:02x}); a policy file must be UTF-8"
        return shown.diagnostic_at(index, message)


def _in_order(name: str, problems: list[Diagnostic]) -> list[Diagnostic]:
    # dict.fromkeys: drop repeats but keep the order of problems found at the same spot
    unique = sorted(dict.fromkeys(problems), key=lambda d: (d.line or 0, d.col or 0))
    if len(unique) <= MAX_DIAGNOSTICS_PER_FILE:
        return unique
    more = len(unique) - MAX_DIAGNOSTICS_PER_FILE
    hidden = Diagnostic(name, None, None, f"{more} more problems not shown")
    return [*unique[:MAX_DIAGNOSTICS_PER_FILE], hidden]


def _explain(loc: yamlload.Loc, error: ErrorDetails) -> tuple[bool, str]:
    """(whether to point at the key, message) for one pydantic error."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldProblem):
        return cause.at_key, cause.message
    kind, value = error["type"], error["input"]
    if kind == "extra_forbidden":
        return True, _unknown_key(loc)
    if kind == "missing":
        return False, _missing(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return False, _not_a_mapping(loc, value)
    if kind in ("tuple_type", "list_type"):
        what = str(loc[0]) if loc[:1] in (("regions",), ("layouts",)) else "rules"
        return (
            False,
            f"{what!r} is a list of {what}, each starting with '- '; got {describe(value)}",
        )
    if isinstance(cause, ValueError):
        return False, str(cause)
    return False, error["msg"]


def _missing(loc: yamlload.Loc) -> str:
    if loc[:1] == ("layouts",):
        return _missing_in_layout(loc)
    if loc[:1] == ("regions",) and loc[-1] == "name":
        return "this region has no 'name'; give it one, unique among the regions"
    if loc[:1] == ("regions",):
        return "this region has no 'memdevs'; list its memdevs by serial number: memdevs: [0x1000]"
    return f"this rule has no {loc[-1]!r}; add mode: devdax, system-ram or ignore"


def _missing_in_layout(loc: yamlload.Loc) -> str:
    if len(loc) == 3:  # ("layouts", i, "devices")
        return (
            "this layout has no 'devices'; list them in address order: devices: "
            "[{size: 1G, mode: devdax}, {size: rest, mode: system-ram}]"
        )
    if loc[-1] == "size":
        return "this device has no 'size'; give a size (1G), a share of the region (25%) or rest"
    return f"this device has no {loc[-1]!r}; add mode: devdax or system-ram"


def _not_a_mapping(loc: yamlload.Loc, value: object) -> str:
    got = describe(value)
    if loc == ():
        hint = "; put 'rules:' above the list" if isinstance(value, list) else ""
        return f"a policy is a mapping with 'version:' and 'rules:', got {got}{hint}"
    if loc[0] == "layouts" and len(loc) in (2, 4):
        item, keys = (
            ("layout", "'devices:'") if len(loc) == 2 else ("device", "'size:' and 'mode:'")
        )
        if value is None:
            return f"empty {item}; a {item} needs at least {keys}"
        what = "a layout" if len(loc) == 2 else "a device of a layout"
        return f"{what} is a mapping with keys such as {keys}, got {got}"
    if loc[0] == "regions":
        if value is None:
            return "empty region; a region needs at least 'name:' and 'memdevs:'"
        return f"a region is a mapping with keys such as 'name:' and 'memdevs:', got {got}"
    if len(loc) == 2:
        if value is None:
            return "empty rule; a rule needs at least 'mode:'"
        return f"a rule is a mapping with keys such as 'match:' and 'mode:', got {got}"
    return f"'match' takes selectors such as 'provider: cxl', got {got}"


def _unknown_key(loc: yamlload.Loc) -> str:
    key, parent = str(loc[-1]), loc[:-1]
    hint = "; YAML merge keys are not supported" if key == "<<" else ""
    if parent == ():
        where, known = "at the top level", TOP_KEYS
        # A near miss of a top-level key comes first: `region:` is 'regions', not the selector.
        if not hint and not did_you_mean(key, TOP_KEYS):
            if key in RULE_KEYS or key in SELECTOR_KEYS:
                hint = "; rules go in a list under 'rules:'"
            elif key in REGION_KEYS:
                hint = "; regions go in a list under 'regions:'"
            elif key in LAYOUT_KEYS:
                hint = "; layouts go in a list under 'layouts:'"
    elif parent[:1] == ("layouts",):
        where, known, hint = _unknown_in_layout(key, parent, hint)
    elif parent[:1] == ("regions",) and len(parent) == 2:
        where, known = "in a region", REGION_KEYS
        hint = hint or REGION_HINTS.get(key.lower().replace("-", "_"), "")
    elif parent[:1] == ("regions",):
        where, known = "in a memdev", MEMDEV_KEYS
        hint = hint or MEMDEV_HINTS.get(key.lower().replace("-", "_"), "")
    elif len(parent) == 2:
        where, known = "in a rule", RULE_KEYS
        if key in SELECTOR_KEYS:
            hint = f"; selectors go under 'match:', e.g. match: {{{key}: ...}}"
    else:
        where, known = "in 'match'", SELECTOR_KEYS
        if key in RULE_KEYS:
            hint = f"; {key!r} belongs to the rule, next to 'match:', not under it"
        hint = hint or SELECTOR_HINTS.get(key.lower().replace("-", "_"), "")
    hint = hint or did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
    return f"unknown key {quote(key)} {where}{hint}"


def _unknown_in_layout(
    key: str, parent: yamlload.Loc, hint: str
) -> tuple[str, tuple[str, ...], str]:
    """(where, the keys known there, a hint) for an unknown key below ``layouts:``."""
    word = key.lower().replace("-", "_")
    if len(parent) == 2:  # ("layouts", i)
        hint = hint or LAYOUT_HINTS.get(word, "")
        if not hint and key in LAYOUT_DEVICE_KEYS:
            hint = f"; {key!r} is given for each device, under 'devices:'"
        if not hint and key in SELECTOR_KEYS:
            hint = f"; selectors go under 'match:', e.g. match: {{{key}: ...}}"
        return "in a layout", LAYOUT_KEYS, hint
    if len(parent) == 4:  # ("layouts", i, "devices", j)
        hint = hint or LAYOUT_DEVICE_HINTS.get(word, "")
        if not hint and (key in SELECTOR_KEYS or key == "match"):
            hint = (
                "; a layout's devices have no selectors: they are placed in the order written, "
                "and the layout's 'match:' picks the region"
            )
        return "in a layout's device", LAYOUT_DEVICE_KEYS, hint
    if not hint and key in LAYOUT_DEVICE_KEYS and key not in SELECTOR_KEYS:
        hint = f"; {key!r} is given for each device, under 'devices:', not under 'match:'"
    return "in 'match'", SELECTOR_KEYS, hint or SELECTOR_HINTS.get(word, "")
