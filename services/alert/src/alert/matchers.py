"""Label matchers, Alertmanager style: ``name op value`` with op one of = != =~ !~.

Used by rule selectors, silences, maintenance windows and inhibition. Regular
expressions are anchored (the whole label value must match), as in Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MatchOp = Literal["=", "!=", "=~", "!~"]


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, description="Label name.")
    value: str = Field(max_length=1000, description="Label value, or a regex for =~ and !~.")
    op: MatchOp = Field("=", description="= != =~ !~")

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                _compiled(self.value)
            except re.error as exc:
                raise ValueError(
                    f"matcher {self.name}: invalid regex {self.value!r}: {exc}"
                ) from None
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """A missing label counts as the empty string (so ``name!=x`` matches it)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _compiled(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found


def match_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def parse_matchers(raw: object) -> list[Matcher]:
    """Matchers stored as JSON (a list of objects)."""
    if not isinstance(raw, list):
        return []
    return [Matcher.model_validate(item) for item in raw]
