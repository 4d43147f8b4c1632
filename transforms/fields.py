"""Reading typed fields out of parsed YAML, with errors that name the field.

Every helper takes `where` ("feature 'user'", "input 'ratings'", "split")
and raises spec.SpecError as `<where>: field '<name>' ...`, so the loader
and every feature kind word their errors the same way.
"""

import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence

from transforms.spec import SpecError

_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def require(mapping: Mapping[str, Any], field: str, where: str) -> Any:
  """The field's value; SpecError when it is missing or null."""
  if field not in mapping or mapping[field] is None:
    raise SpecError(f"{where}: missing required field '{field}'")
  return mapping[field]


def positive_int(value: Any, field: str, where: str,
                 allow_zero: bool = False) -> int:
  """An integer > 0 (or >= 0 with allow_zero); booleans are refused."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise SpecError(f"{where}: field '{field}' must be an integer, "
                    f"got {value!r}")
  if value < 0 or (value == 0 and not allow_zero):
    raise SpecError(f"{where}: field '{field}' must be "
                    f"{'>= 0' if allow_zero else '> 0'}, got {value}")
  return value


def boolean(value: Any, field: str, where: str) -> bool:
  """A real YAML boolean (bool("false") is True, so strings are refused)."""
  if not isinstance(value, bool):
    raise SpecError(f"{where}: field '{field}' must be true or false, "
                    f"got {value!r}")
  return value


def number(value: Any, field: str, where: str) -> float:
  """An int or float, as float; booleans are refused."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise SpecError(f"{where}: field '{field}' must be a number, "
                    f"got {value!r}")
  return float(value)


def mapping(value: Any, where: str) -> Mapping[str, Any]:
  """`value` when it is a mapping."""
  if not isinstance(value, Mapping):
    raise SpecError(f"{where}: must be a mapping, got {value!r}")
  return value


def check_keys(raw: Mapping[str, Any], allowed: Sequence[str],
               where: str) -> None:
  """SpecError naming every key of `raw` that is not in `allowed`."""
  unknown = sorted(set(raw) - set(allowed), key=str)
  if unknown:
    raise SpecError(f"{where}: unknown field(s) {unknown}; "
                    f"allowed: {sorted(allowed)}")


def expand_env(value: str, where: str, overrides: Mapping[str, str],
               used: Optional[Dict[str, str]] = None) -> str:
  """Fills `${VAR}` and `${VAR:-default}` from overrides, then the environment.

  Args:
    value: the text holding `${VAR}` references.
    where: names the field in errors.
    overrides: values that win over the environment (`--env`).
    used: when given, every variable referenced is recorded there with the
      value it was given.

  Returns:
    The text with every reference filled.

  Raises:
    SpecError: a variable without a value or a default.
  """
  def substitute(match):
    var, default = match.group(1), match.group(2)
    if var in overrides:
      resolved = overrides[var]
    elif var in os.environ:
      resolved = os.environ[var]
    elif default is not None:
      resolved = default
    else:
      raise SpecError(f"{where}: environment variable ${{{var}}} is not set "
                      f"(set it, or give a default as ${{{var}:-value}})")
    if used is not None:
      used[var] = resolved
    return resolved
  return _ENV_VAR.sub(substitute, value)
