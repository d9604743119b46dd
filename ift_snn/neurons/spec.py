"""One model grammar for every command that takes a neuron model.

``ift-snn derive | codegen | demo | bench | train`` take the same options
(:func:`add_model_arguments`) and turn them into a model the same way
(:func:`model_from_args`); files and Python code use :func:`model_from_spec`.
A model is one of

* a built-in ``MODEL`` (lif, cuba_lif, ...) with overrides ``--param NAME=VALUE``
  (its parameters, e.g. alpha), ``--theta``, ``--theta-r``, ``--surrogate``,
  ``--spike``, ``--reset``, ``--u-min``, applied by
  :func:`ift_snn.neurons.models.builtin_model`: an override the model does not take is
  an error, never ignored;
* your kernels ``--eps EXPR_OR_TAPS --nu EXPR_OR_TAPS`` with the same overrides
  and ``--truncate K``, ``--name NAME``, built by :func:`ift_snn.neurons.models.srm`;
  taps are a bracketed list of numbers, ``--eps '[0.5, 1, 0.6]'``;
* ``--model-file FILE`` (.json or .toml) in the *spec form*, the keys of
  :data:`SPEC_KEYS` (``builtin`` or ``eps`` + ``nu``, then ``params`` as a
  table NAME = number and the overrides; options given with it apply on top),
  or in the *stored form* :func:`ift_snn.neurons.models.model_to_dict` writes (what
  saved networks hold; recognised by ``eps`` being a table), which takes none.

``--surrogate``: a name (exponential, fast_sigmoid, sigmoid, arctan, gaussian,
triangle, boxcar), a name with constants ``exponential(scale=2, width=0.3)``,
or ``custom(EXPR)`` with EXPR in u and theta. Errors are ValueError or
TypeError naming the option, or the file and the key.
"""

from __future__ import annotations

import argparse
import json
import keyword
import math
import numbers
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from .expressions import (
    CONSTANTS,
    FUNCTIONS,
    MAX_LENGTH,
    ExpressionError,
    free_names,
)
from .models import (
    BUILTINS,
    RESETS,
    NeuronModel,
    builtin_model,
    check_identifier,
    get_model,
    model_from_dict,
    model_to_dict,
    srm,
)
from .surrogates import SURROGATES, Surrogate, parse_surrogate, parse_surrogate_constants

__all__ = ["SPEC_KEYS", "add_model_arguments", "model_options", "model_and_spec_from_args", "model_from_args",
           "model_from_spec", "load_model_file", "save_model_file", "check_model_file_name", "parse_surrogate",
           "parse_kernel", "parse_params", "kernel_names", "toml_dumps"]

#: Keys of the spec form, in the order files are written.
SPEC_KEYS = ("builtin", "eps", "nu", "params", "theta", "theta_r", "surrogate", "spike", "reset", "u_min",
             "truncate", "name")
#: Keys that apply to built-ins and custom kernels alike (truncate and name: custom kernels only).
OVERRIDES = ("params", "theta", "theta_r", "surrogate", "spike", "reset", "u_min")
#: The command-line option of each key (the argparse dest is the key itself).
FLAGS = {"builtin": "MODEL", "eps": "--eps", "nu": "--nu", "params": "--param", "theta": "--theta",
         "theta_r": "--theta-r", "surrogate": "--surrogate", "spike": "--spike", "reset": "--reset",
         "u_min": "--u-min", "truncate": "--truncate", "name": "--name", "model_file": "--model-file"}
#: Value of a kernel parameter given no value on the command line (announced with a note).
DEFAULT_PARAM = 0.9
#: Names a kernel parameter cannot have: the time index and the threshold.
KERNEL_RESERVED = ("n", "theta")
MAX_FILE_BYTES = 1 << 20
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_TAPS = re.compile(rf"\[\s*(?:{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*,?\s*)?\]")
_NUMBERS = {"theta": ("a finite number > 0", lambda v: v > 0), "theta_r": ("a finite number >= 0", lambda v: v >= 0),
            "u_min": ("a finite number", lambda v: True), "params": ("a finite number", lambda v: True)}


# ------------------------------------------------------------------ values
def _number(key: str, value) -> float:
    """``value`` as a float if it is a number ``key`` takes; else ValueError saying what is expected."""
    what, ok = _NUMBERS[key]
    try:
        finite = isinstance(value, numbers.Real) and math.isfinite(value)
    except OverflowError:  # an int of hundreds of digits
        finite = False
    if isinstance(value, bool) or not finite or not ok(value):
        raise ValueError(f"expected {what}, got {str(value)[:80]!s}")
    return float(value)


def _spike(value) -> str | int:
    """A spike function: single, multi, smooth or a maximum count >= 1 (an int or its digits)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not (value in ("single", "multi", "smooth")
                                       or isinstance(value, int) and value >= 1):
        raise ValueError(f"expected single, multi, smooth or a maximum spike count >= 1, got {value!r:.80}")
    return value


def _reset(value) -> str:
    if value not in RESETS:
        raise ValueError(f"expected {' or '.join(RESETS)}, got {value!r:.80}")
    return value


def _truncate(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected an int >= 1 (the number of taps), got {value!r:.80}")
    return value


def parse_kernel(value) -> str | list[float]:
    """A kernel as :func:`~ift_snn.neurons.models.srm` takes it: taps (a list of floats) from a list of numbers or a
    bracketed text of numbers (``'[0.5, 1, 0.6]'``, read by a strict pattern, never evaluated), otherwise
    the expression text itself."""
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                                for v in value):
            raise ValueError(f"taps must be a non-empty list of finite numbers, got {list(value)!r:.80}")
        return [float(v) for v in value]
    if not isinstance(value, str):
        raise ValueError(f"expected an expression in n (text) or taps (a list of numbers), got {value!r:.80}")
    text = value.strip()
    if not text.startswith("["):
        return value
    if len(text) > 64 * MAX_LENGTH or not _TAPS.fullmatch(text):
        raise ValueError(f"{text!r:.80} is not a list of taps: expected numbers in brackets, e.g. [0.5, 1, 0.6]")
    return parse_kernel([float(number) for number in re.findall(_NUMBER, text)])


def _surrogate(spec) -> Surrogate | str:
    """A spec's surrogate, checked: a built-in's text without a scale stays text, so that the constructor chooses
    its scale stable (ift_snn.symbolic.stability.stable_default) as for its default; otherwise the Surrogate."""
    surrogate, given = parse_surrogate_constants(spec)
    return spec.strip() if isinstance(spec, str) and "scale" not in given and surrogate.template is not None \
        else surrogate


def _reserved_names() -> dict[str, str]:
    names = {name: "a function" for name in FUNCTIONS}
    names.update({name: "a constant" for name in CONSTANTS})
    names.update({"n": "the time index", "theta": "the threshold (set it with --theta)"})
    return names


def _check_param_name(name) -> None:
    """ValueError unless ``name`` can be a parameter: an identifier that is no keyword, n, theta, constant
    or function name."""
    if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(f"{name!r:.40} is not a parameter name (letters, digits and _, starting with a letter, "
                         "not a Python keyword)")
    reserved = _reserved_names()
    if name in reserved:
        constants = ", ".join(n for n, w in reserved.items() if w == "a constant")
        raise ValueError(f"{name!r} is reserved ({reserved[name]}); parameter names cannot be n, theta, "
                         f"{constants} or a function name (exp, log, sin, ...)")


def parse_params(items) -> dict[str, float]:
    """``--param NAME=VALUE`` items, each name a valid, unreserved parameter name given once."""
    given: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        try:
            _check_param_name(name)
        except ValueError as exc:
            raise ValueError(f"--param {item!r}: {exc}") from None
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--param {item!r}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"--param {item!r}: {value.strip()} is not a finite number")
        if name in given:
            raise ValueError(f"--param {name} is given twice")
        given[name] = number
    return given


def kernel_names(label: str, text: str) -> list[str]:
    """The parameter names of the kernel ``text`` (given as ``label``), refusing functions used as variables."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"{label} is {len(text)} characters long; at most {MAX_LENGTH} are accepted")
    try:
        names = free_names(text)
    except (RecursionError, MemoryError):
        raise ValueError(f"{label} {text!r} is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    for name in names:
        if name in FUNCTIONS:
            raise ValueError(f"{label} {text!r}: {name!r} is a function name, not a parameter: call it, "
                             f"e.g. {name}(n), or name the parameter differently")
    return [name for name in names if name not in KERNEL_RESERVED]


# ------------------------------------------------------------------ specs
class _Labels:
    """How errors name a key: its option where it came from the command line, else the source and the key."""

    def __init__(self, source: str, flags: Mapping[str, str], cli: bool = False):
        self.source, self.flags, self.cli = source, dict(flags), cli

    def __call__(self, key: str, param: str | None = None) -> str:
        name = f"params.{param}" if param else key
        if name not in self.flags and param and self.cli:
            return f"--param {param}"
        return self.flags.get(name) or f"{self.source}, key {name!r}"

    def short(self, key: str) -> str:
        return self.flags.get(key, key)

    def where(self) -> str:
        return "" if self.cli else f"{self.source}: "

    def value_hint(self, name: str) -> str:
        return f"give it a value with --param {name}=VALUE" if self.cli else \
            f"give it a value in params ({name} = VALUE{' or --param ' + name + '=VALUE' if self.flags else ''})"


def _field(labels: _Labels, key: str, check, value, param: str | None = None):
    """``check(value)``, its ValueError/TypeError prefixed with the label of ``key``."""
    try:
        return check(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{labels(key, param)}: {exc}") from None


def is_stored(spec: Mapping) -> bool:
    """True for the stored form of :func:`~ift_snn.neurons.models.model_to_dict` (its eps is a table)."""
    return isinstance(spec.get("eps"), Mapping)


@lru_cache(maxsize=1)
def _stored_keys() -> frozenset[str]:
    return frozenset(model_to_dict(get_model("if")))


def _checked(spec: Mapping, labels: _Labels) -> dict:
    """The spec form with every value checked (the surrogate parsed); errors name the key."""
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"{labels.source}: unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                         f"a model spec takes {', '.join(SPEC_KEYS)} (or is the stored form of model_to_dict)")
    out = dict(spec)
    if "builtin" in spec:
        name = spec["builtin"]
        if "eps" in spec or "nu" in spec:
            raise ValueError(f"{labels.where()}{labels.short('builtin')} and {labels.short('eps')} exclude each "
                             "other: give a built-in model or your own kernels")
        if not isinstance(name, str) or name not in BUILTINS:
            raise ValueError(f"{labels('builtin')}: unknown model {name!r:.80}; built-ins are {', '.join(BUILTINS)}")
        for key in ("truncate", "name"):
            if key in spec:
                raise ValueError(f"{labels(key)} applies to your own kernels (eps and nu) only, not to the "
                                 f"built-in model {name!r}")
    elif "eps" not in spec and "nu" not in spec:
        raise ValueError(f"{labels.source}: no model: give 'builtin' (a built-in name: {', '.join(BUILTINS)}) "
                         "or 'eps' and 'nu' (your kernels)")
    else:
        for key, other in (("eps", "nu"), ("nu", "eps")):
            if key not in spec:
                raise ValueError(f"{labels.where()}{labels.short(other)} needs {labels.short(key)} as well (the "
                                 f"{key} kernel, e.g. {'theta*beta**n' if key == 'nu' else 'alpha**n'!r})")
            out[key] = _field(labels, key, parse_kernel, spec[key])
    params = spec.get("params", {})
    if not isinstance(params, Mapping):
        raise ValueError(f"{labels('params')}: expected a table of NAME = number, got {params!r:.80}")
    out["params"] = {}
    for name, value in params.items():
        _field(labels, "params", _check_param_name, name, param=str(name))
        out["params"][name] = _field(labels, "params", lambda v: _number("params", v), value, param=name)
    checks = {"theta": lambda v: _number("theta", v), "theta_r": lambda v: _number("theta_r", v),
              "u_min": lambda v: _number("u_min", v), "spike": _spike, "reset": _reset, "truncate": _truncate,
              "surrogate": _surrogate, "name": lambda v: check_identifier(v, "the name")}
    for key, check in checks.items():
        if key in spec:
            out[key] = _field(labels, key, check, spec[key])
    return out


def _build_builtin(spec: dict, labels: _Labels) -> NeuronModel:
    name, params = spec["builtin"], spec["params"]
    if params:
        own = [p for p in get_model(name).parameter_names if p not in ("theta", "theta_r")]
        for p in params:
            if p not in own:
                raise ValueError(f"{labels('params', p)}: {p!r} is not a parameter of the built-in model {name!r}; "
                                 + (f"its parameters are {', '.join(own)}" if own else "it has none")
                                 + " (threshold and reset amount: "
                                 + ("--theta, --theta-r)" if labels.cli else "theta, theta_r)"))
    overrides = {k: spec[k] for k in OVERRIDES if k in spec and k != "params"}
    try:
        return builtin_model(name, **overrides, **params)
    except ValueError as exc:
        refused = re.match(r"(\w+)=.*? does not apply to this model: (.*)", str(exc))
        if refused and refused.group(1) in overrides:
            raise ValueError(f"{labels(refused.group(1))} does not apply to the built-in model {name!r}: "
                             f"{refused.group(2)}") from None
        raise ValueError(f"{labels.where()}model {name!r}: {exc}") from None


def _build_custom(spec: dict, labels: _Labels) -> NeuronModel:
    params = spec["params"]
    needed = {key: kernel_names(labels(key), spec[key]) for key in ("eps", "nu") if isinstance(spec[key], str)}
    unused = sorted(set(params) - {n for names in needed.values() for n in names})
    if unused:
        raise ValueError(f"{labels.where()}{'--param' if labels.cli else 'params'} names {unused} do not appear in "
                         f"{'--eps or --nu' if labels.cli else 'eps or nu'}")
    for key, names in needed.items():
        for name in names:
            if name not in params:
                raise ValueError(f"{labels(key)}: {spec[key]!r:.80} uses {name!r} with no value: "
                                 f"{labels.value_hint(name)}")
    kwargs = {k: spec[k] for k in ("spike", "surrogate", "truncate", "name", "theta_r", "reset", "u_min") if k in spec}
    try:
        return srm(spec["eps"], spec["nu"], spec.get("theta", 1.0), params=params, **kwargs)
    except TypeError as exc:  # srm of a version without theta_r, reset or u_min
        for key in ("theta_r", "reset", "u_min"):
            if key in kwargs and f"'{key}'" in str(exc):
                raise ValueError(f"{labels(key)}: your own kernels (ift_snn.neurons.models.srm) do not take {key} in "
                                 "this version") from None
        raise
    except ExpressionError as exc:
        unknown = re.search(r"unknown name '(\w+)'", str(exc))
        hint = f"; {labels.value_hint(unknown.group(1))}" if unknown else ""
        raise ValueError(f"{labels.where()}{exc}{hint}") from None
    except ValueError as exc:
        raise ValueError(f"{labels.where()}{exc}") from None


def model_from_spec(spec: Mapping, *, source: str = "model spec", flags: Mapping[str, str] | None = None) \
        -> NeuronModel:
    """The model a mapping describes: the spec form (``{"builtin": "lif", "theta": 2}``, ``{"eps": "n*alpha**n",
    "nu": [1, 0.5], "params": {"alpha": 0.8}}``, keys :data:`SPEC_KEYS`) or the stored form of
    :func:`~ift_snn.neurons.models.model_to_dict`. Errors name ``source`` and the key (or the option in ``flags``,
    {key or "params.NAME": option}, for values that came from the command line)."""
    return _model(spec, _Labels(source, flags or {}))


def _model(spec: Mapping, labels: _Labels) -> NeuronModel:
    source = labels.source
    if not isinstance(spec, Mapping):
        raise TypeError(f"{source}: expected a mapping of model keys (a JSON object or TOML table), "
                        f"got {type(spec).__name__}")
    if is_stored(spec):
        unknown = sorted(set(spec) - _stored_keys())
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown} in a stored model; it has {sorted(_stored_keys())}")
        try:
            return model_from_dict(spec)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{source}: {exc}") from None
    spec = _checked(spec, labels)
    return _build_builtin(spec, labels) if "builtin" in spec else _build_custom(spec, labels)


# ------------------------------------------------------------------ files
def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError("reading TOML needs Python 3.11 or newer (tomllib) or pip install tomli") from None
    return tomllib


def load_model_file(path) -> dict:
    """The mapping in a model file (.json or .toml); ValueError naming the file when it cannot be one.

    TOML has no null: a stored-form TOML file gets the optional keys it leaves out (nu, u_min, membrane
    as None, convention as "")."""
    file = Path(path)
    where = f"model file {str(file)!r}"
    check_model_file_name(file, "model file")
    if not file.is_file():
        raise ValueError(f"{where} {'is a folder' if file.is_dir() else 'does not exist'}")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{where} is {file.stat().st_size} bytes; at most {MAX_FILE_BYTES} are accepted")
    toml = file.suffix.lower() == ".toml"
    loads = _toml().loads if toml else json.loads
    try:
        data = loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise ValueError(f"{where} is not valid {'TOML' if toml else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of model keys (a JSON object), got {type(data).__name__}")
    if toml and is_stored(data):
        data = {"nu": None, "u_min": None, "membrane": None, "convention": "", **data}
    return data


def check_model_file_name(path, flag: str) -> None:
    """ValueError unless ``path`` names a .json or .toml file."""
    if Path(path).suffix.lower() not in (".json", ".toml"):
        raise ValueError(f"{flag} {str(path)!r}: expected a .json or .toml file")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written: expected a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII with escapes: a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"{value!r:.80} cannot be written as TOML")


def toml_dumps(mapping: Mapping, table: str = "") -> str:
    """``mapping`` as TOML: its values first, then one [table] per nested mapping; None values are left out."""
    key = lambda k: k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)  # noqa: E731
    lines = [f"[{table}]"] if table else []
    lines += [f"{key(k)} = {_toml_value(v)}" for k, v in mapping.items()
              if v is not None and not isinstance(v, Mapping)]
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            lines += ["", toml_dumps(v, f"{table}.{key(k)}" if table else key(k)).rstrip("\n")]
    return "\n".join(lines).lstrip("\n") + "\n"


def save_model_file(spec: Mapping, path) -> None:
    """Write a model mapping (spec or stored form) as JSON or TOML, chosen by the suffix of ``path``."""
    file = Path(path)
    check_model_file_name(file, "model file")
    text = toml_dumps(spec) if file.suffix.lower() == ".toml" else json.dumps(spec, indent=2) + "\n"
    file.write_text(text, encoding="utf-8")


# --------------------------------------------------------------- arguments
def _arg_type(check, name: str):
    """An argparse type: ``check(text)``, its ValueError the usage error."""
    def parse(text: str):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def _number_text(key: str):
    """The check of a number option ``key`` on its text."""
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = text
        return _number(key, value)

    return check


def _int_text(text: str) -> int:
    try:
        return _truncate(int(text))
    except ValueError:
        raise ValueError(f"expected an int >= 1 (the number of taps), got {text!r}") from None


def add_model_arguments(parser: argparse.ArgumentParser, *, extra_names: tuple[str, ...] = ()) -> None:
    """Add the model grammar to ``parser``: a positional built-in MODEL and the options of the module
    docstring. Every default is None, so that only what the user gave is applied."""
    parser.add_argument("model", nargs="?", default=None, choices=sorted(BUILTINS) + list(extra_names),
                        help="a built-in model (default: lif)")
    group = parser.add_argument_group(
        "model options", "a built-in MODEL with overrides, your own kernels (--eps and --nu), or --model-file; "
        "an option that does not apply to the model is an error")
    group.add_argument("--eps", metavar="EXPR|TAPS",
                       help="your spike-response kernel: a closed form in n, e.g. 'n*alpha**n', or taps, "
                            "e.g. '[0.5, 1, 0.6]'")
    group.add_argument("--nu", metavar="EXPR|TAPS", help="your reset kernel, e.g. 'theta*beta**n' or '[1, 0.5]'")
    group.add_argument("--param", dest="params", action="append", metavar="NAME=VALUE",
                       help="a parameter value (repeatable): of the built-in (e.g. alpha=0.8) or of your kernels "
                            f"(those not given get {DEFAULT_PARAM}, with a note)")
    group.add_argument("--theta", type=_arg_type(_number_text("theta"), "theta"), metavar="X",
                       help="firing threshold (default: the model's, 1)")
    group.add_argument("--theta-r", type=_arg_type(_number_text("theta_r"), "theta_r"), metavar="X",
                       help="reset amount, a parameter of its own (default: theta)")
    group.add_argument("--surrogate", metavar="SPEC",
                       help=f"surrogate derivative: {', '.join(SURROGATES)}; with constants, e.g. "
                            "'exponential(scale=2, width=0.3)'; or 'custom(EXPR)' in u and theta "
                            "(default: the model's, exponential)")
    group.add_argument("--spike", type=_arg_type(_spike, "spike"), metavar="single|multi|smooth|INT",
                       help="spike function, INT a maximum count per step (default: the model's, single)")
    group.add_argument("--reset", choices=RESETS, help="reset by subtraction or to zero (default: the model's, "
                                                       "subtract)")
    group.add_argument("--u-min", type=_arg_type(_number_text("u_min"), "u_min"), metavar="X",
                       help="clip the membrane from below at X < theta (default: no clip)")
    group.add_argument("--truncate", type=_arg_type(_int_text, "truncate"), metavar="K",
                       help="with --eps/--nu: turn kernels without a finite recurrence into their first K taps "
                            "(a model option; truncated BPTT is train's --truncation)")
    group.add_argument("--name", help="with --eps/--nu: the model's name (default: srm)")
    group.add_argument("--model-file", metavar="FILE",
                       help="the model from a .json or .toml file: the spec form (keys builtin or eps and nu, "
                            "params, theta, theta_r, surrogate, spike, reset, u_min, truncate, name; options "
                            "given with it override it; see derive --save-model) or a stored model "
                            "(model_to_dict, as saved networks hold)")


def model_options(args: argparse.Namespace) -> list[str]:
    """The model options given on the command line (MODEL by its name), [] when none."""
    given = [args.model] if getattr(args, "model", None) else []
    return given + [flag for key, flag in FLAGS.items() if key != "builtin" and getattr(args, key, None) is not None]


def _spec_and_labels(args: argparse.Namespace, default: str, extra: Mapping) -> tuple[dict, _Labels]:
    """The spec the command line describes and how errors name its keys; notes on stderr for kernel
    parameters given no value."""
    given = {k: getattr(args, k) for k in OVERRIDES + ("truncate", "name") if getattr(args, k, None) is not None}
    if "params" in given:
        given["params"] = parse_params(given["params"])
    flags = {k: FLAGS[k] for k in given if k != "params"}
    flags.update({f"params.{p}": f"--param {p}" for p in given.get("params", {})})
    for key, (value, flag) in extra.items():
        if key in flags:
            raise ValueError(f"{flag} and {flags[key]} both set {key.removeprefix('params.')}: give one")
        if key.startswith("params."):
            given.setdefault("params", {})[key.removeprefix("params.")] = value
        else:
            given[key] = value
        flags[key] = flag
    if args.model_file is not None:
        if args.model or args.eps is not None or args.nu is not None:
            what = f"the model name {args.model!r}" if args.model else "--eps/--nu"
            raise ValueError(f"--model-file holds the whole model: drop {what} (or --model-file)")
        source = f"model file {args.model_file!r}"
        data = load_model_file(args.model_file)
        if is_stored(data):
            if given:
                given_flags = ", ".join(dict.fromkeys(flags.values()))
                raise ValueError(f"--model-file {args.model_file!r} holds a stored model (model_to_dict, as saved "
                                 f"networks hold), which takes no overrides ({given_flags}); "
                                 "write the model in the spec form (builtin or eps and nu, params, ...) to override it")
            return data, _Labels(source, {})
        if isinstance(data.get("params", {}), Mapping) and "params" in given:
            given["params"] = {**data.get("params", {}), **given["params"]}
        return {**data, **given}, _Labels(source, flags)
    labels = _Labels("command line", {**FLAGS, **flags}, cli=True)
    if args.eps is None and args.nu is None:
        return {"builtin": args.model or default, **given}, labels
    if args.model:
        raise ValueError(f"give a built-in model ({args.model}) or your own kernels (--eps and --nu), not both")
    if args.eps is None:
        raise ValueError("--nu needs --eps as well (the spike-response kernel; e.g. --eps 'alpha**n')")
    if args.nu is None:
        raise ValueError("--eps needs --nu as well (the reset kernel; e.g. --nu 'theta*beta**n')")
    spec = {"eps": _field(labels, "eps", parse_kernel, args.eps), "nu": _field(labels, "nu", parse_kernel, args.nu),
            **given}
    params = dict(given.get("params", {}))
    needed = [n for k in ("eps", "nu") if isinstance(spec[k], str) for n in kernel_names(FLAGS[k], spec[k])]
    for name in dict.fromkeys(needed):
        if name not in params and set(params) <= set(needed):  # else building refuses the unused names
            print(f"note: parameter {name} has no value; using {name}={DEFAULT_PARAM} for the numeric check "
                  f"(set it with --param {name}=VALUE)", file=sys.stderr)
            params[name] = DEFAULT_PARAM
    spec["params"] = params
    return spec, labels


def model_and_spec_from_args(args: argparse.Namespace, *, default: str = "lif", extra: Mapping | None = None) \
        -> tuple[NeuronModel, dict]:
    """The model the options of :func:`add_model_arguments` describe (the built-in ``default`` when none are
    given) and the spec that reproduces it (see :func:`save_model_file`). ``extra``: {key or "params.NAME":
    (value, option)}, more overrides a command folds in (e.g. train's --alpha)."""
    spec, labels = _spec_and_labels(args, default, extra or {})
    return _model(spec, labels), spec


def model_from_args(args: argparse.Namespace, *, default: str = "lif", extra: Mapping | None = None) -> NeuronModel:
    """The model the options of :func:`add_model_arguments` describe (see :func:`model_and_spec_from_args`)."""
    return model_and_spec_from_args(args, default=default, extra=extra)[0]
