"""Search strategies behind one protocol (`Strategy.run(ctx) -> SearchResult`) and registry.

Importing this package registers every strategy module listed below; adding a strategy is adding
one module and one line here.
"""

from . import darts, evolution, fbnet, proxyless, random_search  # noqa: F401  (registration)
from .base import (
    STRATEGIES,
    STRATEGY_DEFAULTS,
    SearchConfig,
    SearchContext,
    SearchResult,
    Strategy,
    get_strategy,
    register_strategy,
)

__all__ = [
    "STRATEGIES", "STRATEGY_DEFAULTS", "SearchConfig", "SearchContext", "SearchResult", "Strategy", "get_strategy",
    "register_strategy",
]  # fmt: skip
