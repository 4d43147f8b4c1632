"""Every feature kind, one module each; this registry names them.

A kind object (base.FeatureKind) is a string equal to its spec name that
also knows the kind's validation, transform, size, row names and hashing.
A new kind is a new module here plus its entry in KINDS (and its tests);
nothing else in the project branches on kind names.
"""

from typing import Dict, Tuple

from transforms.kinds import base
from transforms.kinds.bucketized import Bucketized
from transforms.kinds.cross import Cross
from transforms.kinds.hashed import Hash
from transforms.kinds.identity import Identity
from transforms.kinds.numeric import Numeric
from transforms.kinds.time import DayOfWeek
from transforms.kinds.time import HourOfDay
from transforms.kinds.tokens import Tokens
from transforms.kinds.vocabulary import Vocabulary

VOCABULARY = Vocabulary()
IDENTITY = Identity()
HASH = Hash()
BUCKETIZED = Bucketized()
NUMERIC = Numeric()
TOKENS = Tokens()
DAY_OF_WEEK = DayOfWeek()
HOUR_OF_DAY = HourOfDay()
CROSS = Cross()

KINDS: Dict[str, base.FeatureKind] = {
    str(kind): kind for kind in (VOCABULARY, IDENTITY, HASH, BUCKETIZED,
                                 NUMERIC, TOKENS, CROSS, DAY_OF_WEEK,
                                 HOUR_OF_DAY)}
NAMES: Tuple[str, ...] = tuple(KINDS)


def get(name: str) -> base.FeatureKind:
  """The kind object of a spec `kind:` name.

  Raises:
    KeyError: no kind has that name.
  """
  try:
    return KINDS[str(name)]
  except KeyError:
    raise KeyError(f"unknown feature kind {name!r}; kinds: {NAMES}") from None
