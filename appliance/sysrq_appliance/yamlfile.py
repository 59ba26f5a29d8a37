"""Read a YAML config as a careful parser should: bounded, strict, one line per error.

- size: at most MAX_BYTES, a regular file (never a FIFO or device), UTF-8;
- trust: owned by root (or us) and writable by nobody else, in directories nobody else can
  change (secretfile.check_ancestors), because the config decides what the kernel runs;
- shape: no aliases (a "billion laughs" document cannot expand), nesting at
  most MAX_DEPTH (checked on the event stream, before anything recursive runs), no
  duplicate keys (a second `allow:` must not silently win);
- scalars: YAML 1.2-like, not 1.1: true/false only (not yes/no/on/off), integers in
  decimal or 0x hex only (not 1_000, 010 octal or 1:20 sexagesimal), no timestamps.
  Anything else stays a string, and the schema says what it wanted.
"""

import errno
import os
import re
import stat

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import BaseResolver

from sysrq_appliance.errors import InputError, excerpt
from sysrq_appliance.secretfile import check_ancestors, open_regular, read_bounded

MAX_BYTES = 8 * 1024 * 1024     # a config of 16,384 peers is about 4 MiB
MAX_DEPTH = 16                  # ours nest 4 deep
MAX_EVENTS = 400_000            # 16,384 peers take about 230,000: bounds the work, not only
                                # the bytes (a million empty lists fit in 4 MiB)
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}


class _Resolver(BaseResolver):
    pass


_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(
    r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(
    rf"^(?:{_INT.pattern})$"), list("-+0123456789"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(
    r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


class _StrictConstructor(SafeConstructor):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise ConstructorError(None, None, "a key must be a plain value",
                                       key_node.start_mark) from None
            if duplicate:
                raise ConstructorError(None, None, f"duplicate key {excerpt(key)}; a key may "
                                       "appear once in a mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


    # An explicit !!int or !!bool must not bring back what the resolver refuses (1_0, 0o11,
    # 1:20, yes/off): the same rules whether the tag was written or implied.
    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if not _INT.fullmatch(text):
            raise ConstructorError(None, None, f"{excerpt(text)} is not an integer in decimal "
                                   "or 0x hex", node.start_mark)
        return int(text, 0)

    def construct_yaml_bool(self, node):
        text = self.construct_scalar(node)
        if text not in _BOOL:
            raise ConstructorError(None, None, f"{excerpt(text)} is not true or false",
                                   node.start_mark)
        return _BOOL[text]

    # A tag we do not use is refused without naming it: --config may point at a secret by
    # mistake, and "!secret" would otherwise be quoted back.
    def construct_unsupported(self, node):
        raise ConstructorError(None, None, "a tag (!...) this config does not use; write plain "
                               "values, lists and mappings", node.start_mark)


_StrictConstructor.add_constructor("tag:yaml.org,2002:map", SafeConstructor.construct_yaml_map)
_StrictConstructor.add_constructor("tag:yaml.org,2002:int", _StrictConstructor.construct_yaml_int)
_StrictConstructor.add_constructor("tag:yaml.org,2002:bool",
                                   _StrictConstructor.construct_yaml_bool)
_StrictConstructor.add_constructor(None, _StrictConstructor.construct_unsupported)
for _tag in ("float", "timestamp", "binary", "set", "omap", "pairs", "merge", "value"):
    _StrictConstructor.add_constructor(f"tag:yaml.org,2002:{_tag}",
                                       _StrictConstructor.construct_unsupported)

try:
    from yaml.cyaml import CParser   # libyaml: 10x faster on a fleet config
except ImportError:                  # pragma: no cover - Debian's python3-yaml has libyaml
    CParser = None

if CParser is not None:
    class _Loader(CParser, _StrictConstructor, _Resolver):
        def __init__(self, stream):
            CParser.__init__(self, stream)
            _StrictConstructor.__init__(self)
            _Resolver.__init__(self)
else:                                # pragma: no cover
    class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                  yaml.composer.Composer, _StrictConstructor, _Resolver):
        def __init__(self, stream):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            _StrictConstructor.__init__(self)
            _Resolver.__init__(self)



def _check_config_file(path, st):
    if st.st_uid not in {0, os.geteuid()}:
        raise InputError(f"{path}: owned by uid {st.st_uid}, who could change what this "
                         f"program does as root; run: chown root: {path}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InputError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users "
                         f"change it; run: chmod go-w {path}")
    check_ancestors(path, path)


CONFIG_MISSING = ("no such config file; copy /etc/sysrq-appliance/appliance.yaml.example or "
                  "run 'sysrq-appliance pair'")


def read_text(path, missing=CONFIG_MISSING):
    """The config's text, after every check on the file itself; `missing`: what to say
    when there is no such file."""
    try:
        fd, st = open_regular(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {missing}") from None
    except OSError as exc:
        hint = "; run as root (e.g. sudo sysrq-appliance ...)" if exc.errno == errno.EACCES \
            else ""
        raise InputError(f"{path}: cannot read: {exc.strerror}{hint}") from None
    try:
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file; give the file itself (a config or an inventory)")
        _check_config_file(path, st)
    except BaseException:
        os.close(fd)
        raise
    return decode(read_bounded(fd, MAX_BYTES, path), path)


def decode(data, path):
    """The text of a config's bytes; InputError names the line that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not UTF-8 text; save the file as UTF-8") \
            from None


def parse(text, path="<config>"):
    """The document in `text`, under every rule above; InputError names the line."""
    try:
        _check_events(text)
        loader = _Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise InputError(_yaml_message(path, exc)) from None
    except RecursionError:   # pragma: no cover - _check_events bounds the depth first
        raise InputError(f"{path}: nested too deeply; at most {MAX_DEPTH} levels") from None


def load(path, missing=CONFIG_MISSING):
    return parse(read_text(path, missing), path)


def _check_events(text):
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=_Loader)):
        if count > MAX_EVENTS:
            raise ConstructorError(None, None, f"more than {MAX_EVENTS} values; this cannot "
                                   "be a config", event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            raise ConstructorError(None, None, "aliases (*name) are not supported; write the "
                                   "value out", event.start_mark)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConstructorError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                       event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _yaml_message(path, exc):
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark else ""
    if isinstance(exc, yaml.reader.ReaderError):
        problem = f"character #x{exc.character:04x} is not allowed in YAML"
    else:
        problem = " ".join(str(getattr(exc, "problem", None) or "invalid YAML").split())
    if len(problem) > 120:
        problem = problem[:117] + "..."
    return f"{path}: {where}{problem}" + ("" if ";" in problem else "; fix the YAML")
