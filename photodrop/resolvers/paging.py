"""A numbered page of rows, as the Apertur-style list endpoints answer them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from pydantic import Field

Row = TypeVar("Row")

# Far past any list photodrop keeps, and small enough that (page - 1) * page size stays a 64-bit
# integer: an unbounded page number overflowed the database's OFFSET (a 500, not a 400).
MAX_PAGE = 1_000_000
PageNumber = Annotated[int, Field(ge=1, le=MAX_PAGE, description=f"1 to {MAX_PAGE}")]


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: list[Row]
    total: int
    page: int
    page_size: int

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total / self.page_size)
