"""Where something is wrong in what an operator wrote, and the list of such
problems that validation collects (so that every problem is reported at
once, as ``file:line:column: message``).  No YAML here: the data plane's
records keep a :class:`Where` too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple


class Where(NamedTuple):
    """A place in a file.  (A named tuple, not a dataclass: a large zone
    makes one per value, and a tuple is made in a third of the time.)"""

    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, where: Where, message: str) -> None:
        self.items.append(Problem(where, message))

    def extend(self, other: Problems) -> None:
        self.items.extend(other.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items)
