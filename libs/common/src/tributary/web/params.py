"""Integer types of path, query and body fields: bounded to what the databases store.

PostgreSQL's and MySQL's BIGINT hold signed 64 bits; a larger number in a query
fails inside the driver with a 500. These bounds make it a 422 naming the
parameter, and the OpenAPI schema says so (minimum, maximum).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: any integer a BIGINT column holds
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
#: a count or an offset
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
#: a row id of a BIGINT identity/serial column (they start at 1)
RowId = Annotated[int, Field(ge=1, le=INT64_MAX)]
