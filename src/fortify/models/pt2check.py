"""Check a torch.export archive (.pt2) before torch reads it.

`torch.export.load` is not safe on untrusted files by itself: it unpickles tensor-subclass payloads,
opaque and torchbind objects and (as a fallback) sample inputs with `weights_only=False`; it parses the
graph's shape expressions with `sympy.sympify` (which evaluates Python); it resolves each node's target
by attribute lookup from `torch`, `operator` or `math` (so a crafted target reaches any object `torch`
imports); it loads AOTInductor shared libraries; and `.module()` execs the archive's guard code.

This module reads the archive as a plain zip and JSON and refuses every one of those routes, so what
reaches torch is: raw tensor bytes, sample inputs that torch's restricted `weights_only` loader accepts,
a graph whose nodes call only ATen/prims operators (and plain arithmetic on sizes), and shape
expressions made of symbols, numbers and arithmetic. The caller then uses `.module(check_guards=False)`,
which never execs guard code.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch

from fortify.errors import CheckpointError

_ALLOWED_FILES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/\w+\.json|extra/[\w.-]+"
    r"|data/weights/(weight_\d+|\w+_weights_config\.json|\w+_model_param_config\.json)"
    r"|data/constants/(tensor_\d+|\w+_constants_config\.json|\w+_model_constants_config\.json)"
    r"|data/sample_inputs/\w+\.pt)"
)
# Node targets: ATen / prims operators, arithmetic on sizes, a few structural higher-order ops.
_ALLOWED_TARGET = re.compile(
    r"torch\.ops\.(aten|prims)\.\w+(\.\w+)?"
    r"|torch\.ops\.higher_order\.(cond|while_loop|scan|map_impl|invoke_subgraph"
    r"|wrap_with_set_grad_enabled|wrap_with_autocast)"
    r"|_operator\.(getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|abs|eq|ne|lt|le|gt|ge"
    r"|and_|or_|not_|xor)"
    r"|torch\.(_?sym_\w+)|math\.(ceil|floor|trunc|sqrt)"
)
_REFUSED_OPS = ("from_file",)  # aten::from_file reads a file from disk
# Shape expressions (sympy srepr): symbols, numbers, arithmetic and these names only.
_SYMPY_NAMES = frozenset(
    "Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge StrictLessThan "
    "StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not Piecewise ExprCondPair "
    "floor ceiling sqrt oo zoo nan True False true false positive negative integer real finite "
    "nonnegative nonpositive nonzero zero infinite FloorDiv ModularIndexing Where PythonMod Mod CleanDiv "
    "CeilToInt FloorToInt CeilDiv IntTrueDiv FloatTrueDiv LShift RShift IsNonOverlappingAndDenseIndicator "
    "TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat FloatPow PowByNatural Identity".split()
)
_SYMBOL = re.compile(r"[a-z]+\d+")
_TOKEN = re.compile(
    r"\s+|'(?P<str>[^']*)'|(?P<name>[A-Za-z_]\w*)|\d+(\.\d+)?([eE][-+]?\d+)?|\*\*|//|[-+*/%()<>=!,&|~]"
)


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: refused exported program: {why}")


def _check_expr(path: Path, expr: str) -> None:
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise _refuse(path, f"shape expression with {expr[pos]!r}")
        name, text = m.group("name"), m.group("str")
        if name is not None and name not in _SYMPY_NAMES and not _SYMBOL.fullmatch(name):
            raise _refuse(path, f"shape expression names {name!r}")
        if text is not None and not _SYMBOL.fullmatch(text):
            raise _refuse(path, "shape expression holds a string that is not a symbol name")
        pos = m.end()


def _check_graph(path: Path, node: object) -> None:
    """Walk the serialized program: every node target and shape expression must be on the lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "target" and isinstance(value, str):
                if not _ALLOWED_TARGET.fullmatch(value) or any(op in value for op in _REFUSED_OPS):
                    raise _refuse(path, f"it calls {value!r} (only ATen/prims operators are loaded)")
            elif key == "expr_str" and isinstance(value, str):
                _check_expr(path, value)
            elif key == "range_constraints" and isinstance(value, dict):
                for symbol in value:
                    _check_expr(path, symbol)
            _check_graph(path, value)
    elif isinstance(node, list):
        for item in node:
            _check_graph(path, item)


def _check_payloads(path: Path, name: str, config: dict) -> None:
    for fqn, meta in (config.get("config") or {}).items():
        if not isinstance(meta, dict) or meta.get("use_pickle"):
            raise _refuse(path, f"{fqn!r} is stored as a pickle")
        if "constants" in name and not str(meta.get("path_name", "")).startswith("tensor_"):
            raise _refuse(path, f"constant {fqn!r} is an object, not a tensor")


def check_pt2(path: str | Path) -> None:
    """Raise a one-line CheckpointError unless `path` is an exported program fortify will let torch load."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1 or any("/" not in n for n in names):
                raise _refuse(path, "not a single-folder .pt2 archive")
            root = roots.pop() + "/"
            for name in names:
                if not _ALLOWED_FILES.fullmatch(name[len(root) :]):
                    raise _refuse(
                        path, f"it holds {name[len(root) :]!r} (only tensors, the graph and configs)"
                    )
            rel = {n[len(root) :]: n for n in names}
            if "archive_format" not in rel or z.read(rel["archive_format"]).strip() != b"pt2":
                raise _refuse(path, "archive_format is not pt2")
            for name, full in rel.items():
                if name.endswith("_config.json"):
                    _check_payloads(path, name, json.loads(z.read(full)))
                elif name.startswith("models/"):
                    _check_graph(path, json.loads(z.read(full)))
                elif name.startswith("data/sample_inputs/"):
                    try:  # what torch tries first; refusing here means torch never falls back to pickle
                        torch.load(io.BytesIO(z.read(full)), weights_only=True)
                    except Exception as e:  # noqa: BLE001 - any refusal of the restricted loader
                        raise _refuse(path, "its sample inputs are not plain tensors") from e
            if not any(n.startswith("models/") for n in rel):
                raise _refuse(path, "it holds no program (models/*.json)")
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _refuse(path, f"unreadable archive ({type(e).__name__})") from e
