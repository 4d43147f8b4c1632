"""Command-line flags generated from an options dataclass's fields.

A job's options are one frozen dataclass; each field declares its help text
with `option(...)`, and `add_flags` turns every field into one argparse
flag whose type, default and help come from the field, so the flags cannot
drift from the options they fill. `values_from_args` reads the parsed flags
back as typed field values.

Written here rather than taken from tyro or jsonargparse because the
trainer needs unset flags to stay unset (a flag the user did not give must
not hide the spec's `model:` value, see trainer/config.py), and because
every runtime dependency is staged onto each Dataflow worker.

Field types map to flags as:
  str, int, float         --name VALUE
  bool                    --name / --no-name
  Optional[T]             as T, default unset
  Tuple[str | int, ...]   --name a,b,c
  Tuple[Tuple[str, T]...] --name k=v,k=v  (with `repeat=True`: --name k=v
                          given once per pair, as --env NAME=VALUE)
"""

import argparse
import dataclasses
import typing
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

_HELP = "help"
_FLAG = "flag"
_CHOICES = "choices"
_METAVAR = "metavar"
_PARSE = "parse"
_REPEAT = "repeat"
_SHORT = "short"
_HIDDEN = "hidden"


def option(default: Any = dataclasses.MISSING, *,
           help: str,  # pylint: disable=redefined-builtin
           flag: Optional[str] = None, short: Optional[str] = None,
           choices: Optional[Sequence[Any]] = None,
           metavar: Optional[str] = None,
           parse: Optional[Callable[[Any], Any]] = None,
           repeat: bool = False, hidden: bool = False,
           **metadata: Any) -> Any:
  """A dataclass field that is also a command-line flag.

  Args:
    default: the field's default (omit for a required flag).
    help: the flag's help line (required, not empty); the default is
      appended to it.
    flag: the flag's name when it differs from the field's (`--spec` for
      `spec_path`).
    short: a one-letter alias, e.g. "k" for `-k`.
    choices: the allowed values.
    metavar: how the help names the value.
    parse: converts the flag's text (a list of texts with `repeat`) into
      the field's value, instead of the conversion its type implies.
    repeat: the flag may be given several times (pairs fields).
    hidden: a field that has no flag (set by the program, not the user).
    **metadata: further facts about the field for its owner (e.g. which
      fields a spec may set).

  Returns:
    A dataclasses.field.
  """
  values = dict(metadata, **{_HELP: help, _FLAG: flag, _SHORT: short,
                             _CHOICES: choices, _METAVAR: metavar,
                             _PARSE: parse, _REPEAT: repeat,
                             _HIDDEN: hidden})
  if isinstance(default, (list, dict, set)):
    raise TypeError("use a tuple (immutable) default for an option")
  return dataclasses.field(default=default, metadata=values)


def flag_name(field: dataclasses.Field) -> str:
  """The flag a field is set by, without dashes."""
  return field.metadata.get(_FLAG) or field.name


def _unwrap_optional(hint) -> Tuple[Any, bool]:
  if typing.get_origin(hint) is typing.Union:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1:
      return args[0], True
  return hint, False


def _shape(hint) -> Tuple[str, Any]:
  """('scalar', type) | ('list', item) | ('pairs', value type)."""
  hint, _ = _unwrap_optional(hint)
  if typing.get_origin(hint) is tuple:
    args = typing.get_args(hint)
    item = args[0]
    if typing.get_origin(item) is tuple:
      return "pairs", typing.get_args(item)[1]
    return "list", item
  return "scalar", hint


def comma_list(text: str, item: Callable[[str], Any] = str) -> Tuple[Any, ...]:
  """'a, b,c' -> ('a', 'b', 'c'), each converted by `item`."""
  return tuple(item(value.strip()) for value in str(text).split(",")
               if value.strip())


def pairs(texts, value: Callable[[str], Any] = str,
          what: str = "key=value") -> Tuple[Tuple[str, Any], ...]:
  """'a=1,b=2' (or a list of 'a=1' texts) -> (('a', 1), ('b', 2)).

  Raises:
    ValueError: an entry without '=' or with an empty key.
  """
  entries = texts if isinstance(texts, (list, tuple)) else str(texts).split(",")
  result = []
  for entry in entries:
    if not str(entry).strip():
      continue
    key, equals, text = str(entry).partition("=")
    if not equals or not key.strip():
      raise ValueError(f"expected {what}, got {entry!r}")
    result.append((key.strip(), value(text.strip())))
  return tuple(result)


def _default_text(field: dataclasses.Field) -> str:
  """How a flag's help states its default, e.g. " (default: 10)"."""
  if field.default is dataclasses.MISSING:
    return " (required)"
  value = field.default
  if value is None:
    return " (default: unset)"
  if isinstance(value, bool):
    return f" (default: {'on' if value else 'off'})"
  if isinstance(value, tuple):
    value = ",".join(str(v) for v in value) or "none"
  return f" (default: {value})".replace("%", "%%")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """ArgumentDefaultsHelpFormatter for parsers that mix generated flags in.

  A generated flag's help already states its default (the field's, even
  when the flag itself defaults to unset): it is not stated twice.
  """

  def _get_help_string(self, action: argparse.Action) -> str:
    if action.help and ("(default: " in action.help
                        or action.help.endswith("(required)")):
      return action.help
    return super()._get_help_string(action)


def add_flags(parser: argparse.ArgumentParser, cls: Type,
              unset_defaults: bool = False,
              skip: Sequence[str] = ()) -> None:
  """Adds one flag per field of dataclass `cls` to `parser`.

  Args:
    parser: the parser.
    cls: an options dataclass whose fields were declared with `option`.
    unset_defaults: every flag defaults to None (unset) and the help shows
      the field's default; values_from_args then returns only the flags
      given. Required fields stay required.
    skip: field names that get no flag.

  Raises:
    TypeError: a field that is neither hidden nor skipped has no help text
      (every flag gets a help line).
  """
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    meta = field.metadata
    if field.name in skip or meta.get(_HIDDEN):
      continue
    if not str(meta.get(_HELP) or "").strip():
      raise TypeError(f"{cls.__name__}.{field.name}: a flag needs help "
                      f"text: declare it with flags.option(..., help=...)")
    shape, kind = _shape(hints[field.name])
    names = [f"--{flag_name(field)}"]
    if meta.get(_SHORT):
      names.insert(0, f"-{meta[_SHORT]}")
    required = field.default is dataclasses.MISSING
    kwargs: Dict[str, Any] = {"dest": field.name,
                              "help": meta[_HELP].replace("%", "%%")
                              + _default_text(field)}
    if required:
      kwargs["required"] = True
    else:
      kwargs["default"] = None if unset_defaults else field.default
    if meta.get(_CHOICES) is not None:
      kwargs["choices"] = list(meta[_CHOICES])
    if meta.get(_METAVAR):
      kwargs["metavar"] = meta[_METAVAR]
    if shape == "scalar" and kind is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    elif meta.get(_REPEAT):
      # Unset stays None: argparse would append to a shared default list.
      kwargs["action"] = "append"
      kwargs.pop("default", None)
    elif shape == "scalar" and kind in (int, float) and not meta.get(_PARSE):
      kwargs["type"] = kind
    parser.add_argument(*names, **kwargs)


def _convert(field: dataclasses.Field, hint, value: Any) -> Any:
  parse = field.metadata.get(_PARSE)
  if parse is not None:
    return parse(value)
  shape, kind = _shape(hint)
  if shape == "list":
    return value if isinstance(value, tuple) else comma_list(value, kind)
  if shape == "pairs":
    return value if isinstance(value, tuple) else pairs(value, kind)
  return value


def values_from_args(cls: Type, args: argparse.Namespace,
                     skip: Sequence[str] = ()) -> Dict[str, Any]:
  """The typed field values of the flags in `args`.

  Args:
    cls: the options dataclass `add_flags` was called with.
    args: the parsed flags.
    skip: fields to leave out.

  Returns:
    Field name -> value, for every field that has a flag and a value that
    is not None (with unset_defaults: the flags that were given).

  Raises:
    ValueError: a flag's text does not convert; the message names the flag
      and the error keeps its type (e.g. a SpecError a `parse` raised).
  """
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    if field.name in skip or not hasattr(args, field.name):
      continue
    value = getattr(args, field.name)
    if value is None:
      continue
    if field.default is not dataclasses.MISSING and value is field.default:
      # argparse handed the field's own default back: nothing to convert.
      values[field.name] = value
      continue
    try:
      values[field.name] = _convert(field, hints[field.name], value)
    except ValueError as error:
      # The error's own type stays (a SpecError is still a SpecError), its
      # message names the flag.
      message = str(error)
      if not message.startswith(f"--{flag_name(field)}"):
        message = f"--{flag_name(field)}: {message}"
      raise type(error)(message) from None
  return values
