"""Render the Helm chart in Python, the way `helm template` would, for the constructs the chart uses.

No helm binary is available here, so this implements the subset of Go's text/template and of Helm's
function library (Sprig plus include, toYaml, lookup) that helm/zantara/templates use, with Go's
semantics where they bite: values numbers are float64 (`eq .Values.n 1` fails, `int` converts), a field
of a missing value is an error, `and` / `or` return the deciding operand, ranges over maps go in key
order, `{{-` / `-}}` trim whitespace, variables are scoped to their block. Anything outside the subset
(an unknown function, keyword or token) raises `TemplateError` rather than rendering something Helm
would not.

    render_chart(CHART, overrides) -> Rendered(manifests=[...], notes="...")
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import secrets
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """The template is outside the supported subset, or fails as it would in Helm."""


class RenderFail(TemplateError):
    """The chart called `fail` (a values combination it refuses)."""


# --- lexing --------------------------------------------------------------------------------------------

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<decl>:=)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|=,])
)""",
    re.X,
)


def tokenize(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of one action's content."""
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise TemplateError(f"cannot read {text[pos:]!r} in {{{{ {text} }}}}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def split_template(source: str) -> Iterator[tuple[str, str]]:
    """("text", s) and ("action", content) pieces, with `{{-` / `-}}` trimming and comments removed."""
    pieces: list[list[str]] = []
    pos, trim_next = 0, False
    for match in ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        pieces.append(["text", text])
        content = match.group(2)
        if not content.strip().startswith("/*"):
            pieces.append(["action", content])
        elif not content.strip().endswith("*/"):
            raise TemplateError(f"unclosed comment {content[:40]!r}")
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    pieces.append(["text", tail.lstrip() if trim_next else tail])
    for kind, text in pieces:
        if kind == "action" or text:
            yield kind, text


# --- parsing -------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """`$a, $b := cmd | cmd`: declared (or assigned) variables and commands of operand lists."""

    commands: list[list[Any]]
    variables: list[str] = field(default_factory=list)
    assign: bool = False


@dataclass
class Node:
    kind: str  # text, action, if, with, range, template
    text: str = ""
    pipe: Pipeline | None = None
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)


def parse_pipeline(tokens: list[tuple[str, str]]) -> Pipeline:
    variables: list[str] = []
    assign = False
    for i, (kind, text) in enumerate(tokens):
        if kind == "decl" or (kind == "punct" and text == "="):
            names = [t for k, t in tokens[:i] if k == "var"]
            if len(names) != len([t for t in tokens[:i] if t != ("punct", ",")]):
                raise TemplateError(f"bad declaration {tokens}")
            variables, assign, tokens = names, kind != "decl", tokens[i + 1 :]
            break
    operands, pos = parse_operands(tokens, 0)
    if pos != len(tokens):
        raise TemplateError(f"unexpected {tokens[pos:]}")
    return Pipeline(operands, variables, assign)


def parse_operands(tokens: list[tuple[str, str]], pos: int) -> tuple[list[list[Any]], int]:
    """Commands separated by `|` until a `)` or the end."""
    commands: list[list[Any]] = [[]]
    while pos < len(tokens):
        kind, text = tokens[pos]
        if kind == "punct" and text == ")":
            break
        if kind == "punct" and text == "|":
            commands.append([])
            pos += 1
            continue
        if kind == "punct" and text == "(":
            inner, pos = parse_operands(tokens, pos + 1)
            if pos >= len(tokens) or tokens[pos] != ("punct", ")"):
                raise TemplateError("unclosed (")
            commands[-1].append(("pipe", Pipeline(inner)))
            pos += 1
            continue
        if kind == "punct":
            raise TemplateError(f"unexpected {text!r}")
        commands[-1].append((kind, text))
        pos += 1
    if not all(commands):
        raise TemplateError("empty command in pipeline")
    return commands, pos


def parse(source: str, defines: dict[str, list[Node]]) -> list[Node]:
    """The node tree of one file; `define` blocks go into `defines`."""
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node], str]] = [(None, root, "root")]
    for kind, text in split_template(source):
        body = stack[-1][1]
        if kind == "text":
            body.append(Node("text", text))
            continue
        tokens = tokenize(text)
        head = tokens[0][1] if tokens and tokens[0][0] == "ident" else ""
        if head in {"if", "with", "range"}:
            node = Node(head, pipe=parse_pipeline(tokens[1:]))
            body.append(node)
            stack.append((node, node.body, head))
        elif head == "else":
            owner, _, what = stack.pop()
            if owner is None or what == "define":
                raise TemplateError("else outside if/with/range")
            node = owner
            if len(tokens) > 1:
                if tokens[1] != ("ident", "if") or node.kind != "if":
                    raise TemplateError(f"unsupported {text!r}")
                inner = Node("if", pipe=parse_pipeline(tokens[2:]))
                node.orelse = [inner]
                stack.append((node, node.orelse, "chain"))
                stack.append((inner, inner.body, "if"))
            else:
                stack.append((node, node.orelse, "else"))
        elif head == "end":
            if len(stack) == 1:
                raise TemplateError("end without a block")
            stack.pop()
            while stack[-1][2] == "chain":
                stack.pop()
        elif head == "define":
            name = json.loads(tokens[1][1])
            defines[name] = []
            stack.append((None, defines[name], "define"))
        elif head in {"template", "block", "break", "continue"}:
            raise TemplateError(f"{head} is outside the supported subset")
        else:
            body.append(Node("action", pipe=parse_pipeline(tokens)))
    if len(stack) != 1:
        raise TemplateError(f"unclosed {stack[-1][2]}")
    return root


# --- values and Go semantics ---------------------------------------------------------------------------


def go_number(value: Any) -> Any:
    """Values as Helm holds them: every YAML number is a float64."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: go_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [go_number(v) for v in value]
    return value


def format_float(value: float) -> str:
    """Go's %v of a float64: the shortest digits, in exponent form below 1e-4 and from 1e+06 up
    (why Helm prints a values number 1000000 as 1e+06)."""
    if math.isinf(value) or math.isnan(value):
        return {math.inf: "+Inf", -math.inf: "-Inf"}.get(value, "NaN")
    if value == 0:
        return "0"
    number = Decimal(repr(value)).normalize()
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    exp10 = len(digits) - 1 + exponent
    if -4 <= exp10 < 6:
        return format(number, "f")
    mantissa = "".join(map(str, digits))
    mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if value < 0 else ''}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"


def strval(value: Any) -> str:
    """Sprig's strval / Go's fmt %v for the types the chart prints."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, int | str):
        return str(value)
    raise TemplateError(f"printing a {type(value).__name__} ({value!r}) is outside the supported subset")


def truthy(value: Any) -> bool:
    """Go template truth: false, 0, nil, empty string / list / map are false."""
    return not (
        value is None or value is False or value == 0 or (hasattr(value, "__len__") and len(value) == 0)
    )


def go_compare(a: Any, b: Any, op: str) -> bool:
    basic = (bool, int, float, str, type(None))
    if not isinstance(a, basic) or not isinstance(b, basic):
        raise TemplateError(f"{op}: non-comparable {a!r} {b!r}")
    kinds = {type(a), type(b)}
    if len(kinds) > 1 and not (op == "eq" and None in (a, b)):
        raise TemplateError(f"{op}: incompatible types for comparison: {a!r} {b!r}")
    return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]  # type: ignore[operator]


def to_int(value: Any) -> int:
    if isinstance(value, str):
        return int(value) if re.fullmatch(r"-?\d+", value) else 0
    return int(value or 0)


def go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def to_plain(value: Any) -> Any:
    """A value as sigs.k8s.io/yaml would marshal it: integral float64 as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    return (
        yaml.safe_dump(to_plain(value), default_flow_style=False, sort_keys=True, allow_unicode=True)
        .rstrip("\n")
        .removesuffix("\n...")
    )


def go_printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        if verb == "d":
            return str(int(value))
        if verb == "q":
            return go_quote(strval(value))
        return strval(value)

    return re.sub(r"%([svdq%])", one, fmt)


def indent(spaces: Any, text: Any) -> str:
    pad = " " * int(spaces)
    return pad + strval(text).replace("\n", "\n" + pad)


def empty(value: Any) -> bool:
    return not truthy(value)


# --- execution -----------------------------------------------------------------------------------------


class Renderer:
    """Executes parsed templates against a context (`.Values`, `.Release`, `.Chart`, `.Files`)."""

    def __init__(self, chart_dir: Path, defines: dict[str, list[Node]]) -> None:
        self.chart_dir = chart_dir
        self.defines = defines
        self.functions: dict[str, Callable[..., Any]] = {
            "default": lambda d, *v: v[0] if v and truthy(v[0]) else d,
            "quote": lambda *v: " ".join(go_quote(strval(x)) for x in v if x is not None),
            "toString": strval,
            "toYaml": to_yaml,
            "toJson": lambda v: json.dumps(to_plain(v), sort_keys=True, separators=(",", ":")),
            "indent": indent,
            "nindent": lambda n, t: "\n" + indent(n, t),
            "trunc": lambda n, s: s[: int(n)] if int(n) >= 0 else s[int(n) :],
            "trimSuffix": lambda suffix, s: s.removesuffix(suffix),
            "contains": lambda sub, s: sub in s,
            "replace": lambda old, new, s: s.replace(old, new),
            "printf": go_printf,
            "eq": lambda a, *b: any(go_compare(a, x, "eq") for x in b),
            "ne": lambda a, b: go_compare(a, b, "ne"),
            "lt": lambda a, b: go_compare(a, b, "lt"),
            "le": lambda a, b: go_compare(a, b, "le"),
            "gt": lambda a, b: go_compare(a, b, "gt"),
            "ge": lambda a, b: go_compare(a, b, "ge"),
            "not": lambda v: not truthy(v),
            "int": to_int,
            "mul": lambda *v: math.prod(to_int(x) for x in v),
            "ternary": lambda a, b, cond: a if cond else b,
            "empty": empty,
            "fail": self._fail,
            "list": lambda *v: list(v),
            "append": lambda seq, v: [*seq, v],
            "dict": lambda *kv: {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)},
            "get": lambda d, k: d.get(k, ""),
            "set": self._set,
            "hasKey": lambda d, k: k in d,
            "has": lambda needle, seq: needle in (seq or []),
            "merge": merge_into,
            "index": self._index,
            "join": lambda sep, seq: sep.join(strval(x) for x in seq),
            "deepCopy": copy.deepcopy,
            "sha256sum": lambda s: hashlib.sha256(s.encode()).hexdigest(),
            "b64enc": lambda s: base64.b64encode(strval(s).encode()).decode(),
            "b64dec": lambda s: base64.b64decode(strval(s)).decode() if s else "",
            "randAlphaNum": lambda n: "".join(
                secrets.choice(string.ascii_letters + string.digits) for _ in range(int(n))
            ),
            "lookup": lambda *_: {},
            "include": self._include,
        }

    @staticmethod
    def _fail(message: str) -> str:
        raise RenderFail(message)

    @staticmethod
    def _set(target: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
        target[key] = value
        return target

    @staticmethod
    def _index(container: Any, *keys: Any) -> Any:
        for key in keys:
            if isinstance(container, dict):
                container = container.get(key)
            elif isinstance(container, list):
                container = container[int(key)]
            else:
                raise TemplateError(f"index of {container!r}")
        return container

    def _include(self, name: str, data: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"no template {name!r}")
        return self.execute(self.defines[name], data)

    def execute(self, nodes: list[Node], data: Any) -> str:
        """Render a node list with `.` and `$` set to `data`."""
        out: list[str] = []
        self._run(nodes, data, [{"$": data}], out)
        return "".join(out)

    def _run(self, nodes: list[Node], dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            assert node.pipe is not None
            if node.kind == "action":
                value = self._pipeline(node.pipe, dot, scopes)
                if not node.pipe.variables:
                    out.append(strval(value))
            elif node.kind == "if":
                value = self._pipeline(node.pipe, dot, scopes + [{}])
                self._run(node.body if truthy(value) else node.orelse, dot, scopes + [{}], out)
            elif node.kind == "with":
                scope: dict[str, Any] = {}
                value = self._pipeline(node.pipe, dot, scopes + [scope])
                if truthy(value):
                    self._run(node.body, value, scopes + [scope], out)
                else:
                    self._run(node.orelse, dot, scopes + [{}], out)
            elif node.kind == "range":
                self._range(node, dot, scopes, out)

    def _range(self, node: Node, dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        assert node.pipe is not None
        names = node.pipe.variables
        value = self._pipeline(Pipeline(node.pipe.commands), dot, scopes)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif value is None:
            items = []
        else:
            raise TemplateError(f"range over {value!r}")
        if not items:
            self._run(node.orelse, dot, scopes + [{}], out)
        for key, element in items:
            scope: dict[str, Any] = {}
            if len(names) == 1:
                scope[names[0]] = element
            elif len(names) == 2:
                scope[names[0]], scope[names[1]] = key, element
            self._run(node.body, element, scopes + [scope], out)

    def _pipeline(self, pipe: Pipeline, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self._command(command, dot, scopes, value if i else _NOTHING)
        if pipe.variables:
            if pipe.assign:
                target = next((s for s in reversed(scopes) if pipe.variables[0] in s), None)
                if target is None:
                    raise TemplateError(f"assignment to undeclared {pipe.variables[0]}")
                target[pipe.variables[0]] = value
            else:
                scopes[-1][pipe.variables[0]] = value
        return value

    def _command(self, command: list[Any], dot: Any, scopes: list[dict[str, Any]], piped: Any) -> Any:
        kind, text = command[0]
        args = [self._operand(op, dot, scopes) for op in command[1:]]
        if piped is not _NOTHING:
            args.append(piped)
        if kind == "ident" and text not in {"true", "false", "nil"}:
            function = self.functions.get(text)
            if function is None:
                raise TemplateError(f'function "{text}" not defined')
            return function(*args)
        head = self._operand(command[0], dot, scopes)
        if callable(head):
            return head(*args)
        if args:
            raise TemplateError(f"{text} is not a function")
        return head

    def _operand(self, operand: tuple[str, Any], dot: Any, scopes: list[dict[str, Any]]) -> Any:
        kind, text = operand
        if kind == "pipe":
            return self._pipeline(text, dot, scopes)
        if kind == "str":
            return json.loads(text)
        if kind == "raw":
            return text[1:-1]
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "ident":
            if text in {"true", "false"}:
                return text == "true"
            if text == "nil":
                return None
            if text in self.functions:  # a niladic call, e.g. `default dict`
                return self.functions[text]()
            raise TemplateError(f'function "{text}" not defined')
        if kind == "field":
            return fields(dot, text)
        if kind == "var":
            name, _, rest = text.partition(".")
            for scope in reversed(scopes):
                if name in scope:
                    return fields(scope[name], "." + rest if rest else ".")
            raise TemplateError(f"undefined variable {name}")
        raise TemplateError(f"unexpected operand {text!r}")


_NOTHING = object()


def fields(value: Any, chain: str) -> Any:
    """`.a.b` of a value; a field of nil is an error, as in Go."""
    for name in [part for part in chain.split(".") if part]:
        if value is None:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
        if not isinstance(value, dict):
            raise TemplateError(f"can't evaluate field {name} in {type(value).__name__}")
        value = value.get(name)
    return value


def merge_into(target: dict[str, Any], *sources: dict[str, Any]) -> dict[str, Any]:
    """Sprig's `merge`: `sources` deep-merged into `target` (changed in place), where the keys `target`
    (then the earlier source) already has win."""
    for source in sources:
        for key, value in source.items():
            if isinstance(target.get(key), dict) and isinstance(value, dict):
                merge_into(target[key], value)
            elif key not in target:
                target[key] = copy.deepcopy(value)
    return target


def _and_or(renderer: Renderer) -> None:
    """`and` / `or` return their deciding operand (all operands are evaluated first: harmless here)."""

    def go_and(*values: Any) -> Any:
        for value in values:
            if not truthy(value):
                return value
        return values[-1]

    def go_or(*values: Any) -> Any:
        for value in values:
            if truthy(value):
                return value
        return values[-1]

    renderer.functions["and"] = go_and
    renderer.functions["or"] = go_or


# --- the chart -----------------------------------------------------------------------------------------


def merge(base: Any, override: Any) -> Any:
    """Helm's values coalescing: maps merge key by key, anything else replaces; null deletes."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = merge(base.get(key), value)
        return merged
    return copy.deepcopy(override)


@dataclass(frozen=True)
class Rendered:
    """The manifests (one dict per Kubernetes object) and the rendered NOTES.txt."""

    manifests: list[dict[str, Any]]
    notes: str
    values: dict[str, Any]


def chart_values(chart_dir: Path, *overrides: dict[str, Any]) -> dict[str, Any]:
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    for override in overrides:
        values = merge(values, override)
    return values


def render_chart(
    chart_dir: Path, *overrides: dict[str, Any], release: str = "zantara", namespace: str = "llm"
) -> Rendered:
    """Render every template like `helm template RELEASE CHART -n NAMESPACE -f ...` (no cluster:
    `lookup` finds nothing). Raises RenderFail when the chart calls `fail`."""
    values = chart_values(chart_dir, *overrides)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    defines: dict[str, list[Node]] = {}
    templates = sorted((chart_dir / "templates").iterdir())
    parsed = {path.name: parse(path.read_text(), defines) for path in templates if path.is_file()}
    renderer = Renderer(chart_dir, defines)
    _and_or(renderer)
    context = {
        "Values": go_number(values),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
        "Files": {"Get": lambda name: (chart_dir / name).read_text()},
    }
    manifests: list[dict[str, Any]] = []
    notes = ""
    for name, nodes in parsed.items():
        text = renderer.execute(nodes, context)
        if name == "NOTES.txt":
            notes = text
        elif not name.startswith("_"):
            for document in yaml.safe_load_all(text):
                if document is not None:
                    manifests.append(document)
    return Rendered(manifests, notes, values)


def container_environment(
    rendered: Rendered, container: dict[str, Any], secret: dict[str, str]
) -> dict[str, str]:
    """What a rendered container's environment holds, as the kubelet builds it: its ConfigMaps'
    settings, then its own entries in order (a later one wins), `secretKeyRef`s read from `secret` (a
    missing key that is not optional fails, as the pod would)."""
    config_maps = {
        m["metadata"]["name"]: m.get("data", {}) for m in rendered.manifests if m["kind"] == "ConfigMap"
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        if ref["key"] in secret:
            env[entry["name"]] = secret[ref["key"]]
        elif not ref.get("optional"):
            raise KeyError(f"{entry['name']}: the Secret has no key {ref['key']!r} and it is not optional")
    return env
