"""A template's output reused across requests that differ only in their code and link.

Rendering the bundled HTML layout through Jinja (three levels of ``extends``, some 60 pieces) is
the largest single cost of a send, and for one template, language, brand and type it comes out
the same for every request but for the code (and, for the hooks' emails, the link).
:class:`RenderMemo` renders such a template once more with a random stand-in for each of those
values, keeps the pieces between the stand-ins, and answers the next request with the same
pieces joined around its own values, converted and escaped exactly as the template would.

It does so only where that is provably the same output:

- every template of the chain (the template and the parents it ``extends``, read back through
  its loader) uses the value only as plain output (``{{ code }}``, which Logto's placeholder rule
  turns into a filter call, or Jinja's own) or as the test of an ``if`` (``{% if code %}``),
  under nothing but blocks and ``if`` s: never in a filter, a comparison, a loop, a macro, a
  ``set``, an ``include`` or a block whose output is reused through ``self.<block>()`` or
  ``super()`` other than as plain output;
- the value is a non-empty string (its truthiness is then the stand-in's), and everything else
  the template sees is the same (the rest of the context is the memo's key);
- the joined output is byte-identical to a real render of the request that made the entry
  (checked for every new entry; a template failing it is never memoised again).

Bounded: :data:`MAX_ENTRIES` entries, least recently used first out, keyed by contexts of at
most :data:`MAX_KEY_CHARS` of JSON; a template whose entries are
seldom reused (every request brings another context) stops being memoised after
:data:`TRIAL_MISSES`, so it never costs two renders for long.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import Template, nodes
from markupsafe import escape

from .placeholders import FUNCTION

VARYING = ("code", "link")  # what changes from one request to the next for the same template
MAX_ENTRIES = 256
MAX_KEY_CHARS = 4096  # a context larger than this (a usual one is under 1 KB) is not memoised
TRIAL_MISSES = 64  # new entries a template may make before its reuse is judged
_ALLOWED_ABOVE = (nodes.Template, nodes.Block, nodes.If, nodes.Output)


def _children(node: nodes.Node) -> Iterator[tuple[nodes.Node, str]]:
    for field in node.fields:
        value = getattr(node, field, None)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, nodes.Node):
                yield child, field


def _is_plain_output(parent: nodes.Node | None, field: str) -> bool:
    """Whether a node under ``parent``'s ``field`` is printed as it is (``{{ ... }}``)."""
    return isinstance(parent, nodes.Output) and field == "nodes"


class _Scan:
    """What one template tree does with the varying names: those it uses unsafely, the blocks
    that output one, and the blocks it calls other than as plain output."""

    def __init__(self) -> None:
        self.unsafe: set[str] = set()
        self.output_blocks: dict[str, set[str]] = {}
        self.reused_blocks: set[str] = set()
        self.super_reused = False

    def walk(self, node: nodes.Node, above: list[tuple[nodes.Node, str]]) -> None:
        parent, field = above[-1] if above else (None, "")
        if isinstance(node, nodes.Name) and node.name in VARYING:
            self._name(node, above)
        elif isinstance(node, nodes.Call) and not _is_plain_output(parent, field):
            target = node.node
            if isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name):
                if target.node.name == "self":
                    self.reused_blocks.add(target.attr)
            elif isinstance(target, nodes.Name) and target.name == "super":
                self.super_reused = True
        elif isinstance(node, nodes.Include | nodes.Import | nodes.FromImport):
            self.unsafe.update(VARYING)  # what the other template does is not seen here
        for child, child_field in _children(node):
            self.walk(child, [*above, (node, child_field)])

    def _name(self, node: nodes.Name, above: list[tuple[nodes.Node, str]]) -> None:
        name = node.name
        if node.ctx != "load":
            self.unsafe.add(name)
            return
        chain = above
        parent, field = chain[-1]
        if isinstance(parent, nodes.Filter) and parent.name == FUNCTION and field == "node":
            # Logto's placeholder rule: {{ (code)|logto_placeholder((), '{{ code }}') }}
            if parent.kwargs or parent.dyn_args or parent.dyn_kwargs or not _constant(parent.args):
                self.unsafe.add(name)
                return
            chain = chain[:-1]
            parent, field = chain[-1]
            kind = "output" if _is_plain_output(parent, field) else ""
        elif _is_plain_output(parent, field):
            kind = "output"
        else:  # a test: only its truthiness counts (`if code`, `if link and ...`, `not code`)
            while isinstance(parent, nodes.And | nodes.Or | nodes.Not):
                chain = chain[:-1]
                parent, field = chain[-1]
            kind = "test" if isinstance(parent, nodes.If) and field == "test" else ""
        ancestors = [n for n, _ in chain[:-1]]
        if not kind or not all(isinstance(n, _ALLOWED_ABOVE) for n in ancestors):
            self.unsafe.add(name)
            return
        if kind == "output":
            for block in (n for n in ancestors if isinstance(n, nodes.Block)):
                self.output_blocks.setdefault(block.name, set()).add(name)


def _constant(args: list[nodes.Expr]) -> bool:
    try:
        for arg in args:
            arg.as_const()
    except nodes.Impossible:
        return False
    return True


Scanned = dict[tuple[Any, str], tuple[_Scan, list[str]] | None]


def _scanned(env: Any, name: str, cache: Scanned) -> tuple[_Scan, list[str]] | None:
    """One file's scan and the parents it extends (None: unreadable, or a parent chosen at run
    time), read back through ``env``'s loader once per memo."""
    key = (env, name)
    if key not in cache:
        try:
            source, _, _ = env.loader.get_source(env, name)
            tree = env.parse(source, name)
        except Exception:  # unreadable or not parsable as it was: render as before
            cache[key] = None
            return None
        parents = [extends.template for extends in tree.find_all(nodes.Extends)]
        if not all(isinstance(p, nodes.Const) and isinstance(p.value, str) for p in parents):
            cache[key] = None
            return None
        scan = _Scan()
        scan.walk(tree, [])
        cache[key] = (scan, [p.value for p in parents])
    return cache[key]


def memoisable(template: Template, cache: Scanned | None = None) -> frozenset[str]:
    """The varying names ``template`` (with its parents) uses only in ways a stand-in
    reproduces; empty when a source cannot be read back or a parent is chosen at run time."""
    env, name = template.environment, template.name
    if env.loader is None or name is None:
        return frozenset()
    cache = {} if cache is None else cache
    unsafe: set[str] = set()
    output_blocks: dict[str, set[str]] = {}
    reused: set[str] = set()
    super_reused = False
    seen, queue = set(), [name]
    while queue:
        current = queue.pop()
        if current in seen:
            continue
        seen.add(current)
        found = _scanned(env, current, cache)
        if found is None:
            return frozenset()
        scan, parents = found
        unsafe |= scan.unsafe
        for block, names in scan.output_blocks.items():
            output_blocks.setdefault(block, set()).update(names)
        reused |= scan.reused_blocks
        super_reused = super_reused or scan.super_reused
        queue.extend(parents)
    for block, names in output_blocks.items():
        if block in reused or super_reused:
            unsafe |= names
    return frozenset(VARYING) - unsafe


class _Pieces:
    """A render cut at the stand-ins: literal text, and between the pieces the names."""

    __slots__ = ("names", "texts")

    def __init__(self, texts: list[str], names: list[str]) -> None:
        self.texts = texts
        self.names = names

    def join(self, values: Mapping[str, str]) -> str:
        out = [self.texts[0]]
        for name, text in zip(self.names, self.texts[1:], strict=True):
            out.append(values[name])
            out.append(text)
        return "".join(out)


class RenderMemo:
    """See the module docstring. One per template library; not shared between threads."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        # A stand-in per name, unguessable (a payload cannot contain it) and of both cases
        # (a filter that changes case would break it, and the first check would see that).
        self._marks = {name: f"Zq{secrets.token_hex(12)}Xk" for name in VARYING}
        self._split = re.compile("(" + "|".join(self._marks.values()) + ")")
        self._by_mark = {mark: name for name, mark in self._marks.items()}
        self._entries: OrderedDict[tuple[Any, ...], _Pieces] = OrderedDict()
        # Per template (kept alive by the library that owns this memo): the names it may take
        # stand-ins for, and how often its entries were made and reused.
        self._safe: dict[Template, frozenset[str]] = {}
        self._misses: dict[Template, int] = {}
        self._hits: dict[Template, int] = {}
        self._scanned: Scanned = {}  # each file's scan, shared by the templates extending it

    def _names(self, template: Template) -> frozenset[str]:
        found = self._safe.get(template)
        if found is None:
            found = self._safe[template] = memoisable(template, self._scanned)
        return found

    @staticmethod
    def freeze(context: Mapping[str, Any]) -> str | None:
        """What keys a render besides the varying values: ``context`` without them, as JSON
        (None: not JSON, never memoised). Worked out once for the renders of one message."""
        try:
            return json.dumps(
                {k: v for k, v in context.items() if k not in VARYING},
                sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            )  # fmt: skip
        except (TypeError, ValueError):
            return None

    def render(
        self, template: Template, context: Mapping[str, Any], frozen: str | None = None
    ) -> str:
        """``template.render(context)``, from the memo when it is the same output; ``frozen``:
        :meth:`freeze` of ``context``, when the caller has it."""
        names = self._names(template)
        values = {n: v for n in names if isinstance(v := context.get(n), str) and v}
        if not values:
            return template.render(context)
        frozen = self.freeze(context) if frozen is None else frozen
        others = {n: context[n] for n in VARYING if n in context and n not in values}
        try:
            kept = json.dumps(others, sort_keys=True, ensure_ascii=False) if others else ""
        except (TypeError, ValueError):
            kept = None
        if frozen is None or kept is None:  # not a JSON value: not keyed
            return template.render(context)
        if len(frozen) + len(kept) > MAX_KEY_CHARS:  # the memo's memory stays small
            return template.render(context)
        key = (template, tuple(values), frozen, kept)
        pieces = self._entries.get(key)
        if pieces is not None:
            self._entries.move_to_end(key)
            self._hits[template] = self._hits.get(template, 0) + 1
            return pieces.join(self._converted(template, values))
        output = template.render(context)
        self._learn(template, context, values, key, output)
        return output

    def _converted(self, template: Template, values: Mapping[str, str]) -> dict[str, str]:
        """The values as the template outputs them: a string is its own text under Logto's
        placeholder rule and Jinja's alike, escaped where the template autoescapes."""
        autoescape = template.environment.autoescape
        if callable(autoescape):
            autoescape = autoescape(template.name)
        if not autoescape:
            return dict(values)
        return {name: str(escape(value)) for name, value in values.items()}

    def _learn(
        self,
        template: Template,
        context: Mapping[str, Any],
        values: Mapping[str, str],
        key: tuple[Any, ...],
        output: str,
    ) -> None:
        misses = self._misses[template] = self._misses.get(template, 0) + 1
        if misses > TRIAL_MISSES and self._hits.get(template, 0) < misses:
            self._safe[template] = frozenset()  # seldom reused: render as before
            return
        probe = template.render({**context, **{n: self._marks[n] for n in values}})
        parts = self._split.split(probe)
        pieces = _Pieces(parts[0::2], [self._by_mark[mark] for mark in parts[1::2]])
        if pieces.join(self._converted(template, values)) != output:
            self._safe[template] = frozenset()  # not the same output: never again
            return
        self._entries[key] = pieces
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
