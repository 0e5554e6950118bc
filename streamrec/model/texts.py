"""How users and items are written as text for the BERT models.

The item text is what the encoder embeds and what the scorer reads on the
candidate side; the user context is the titles of the user's recent items,
newest first, cut to a token budget (plus the search query when there is one).
Both sides of training and serving call these functions, so a change here
changes both at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

SEPARATOR = " ; "


def item_text(title: str, category_path: Sequence[str] = (), brand: str | None = None) -> str:
    parts = [title.strip()]
    if category_path:
        parts.append(" > ".join(level.strip() for level in category_path if level.strip()))
    if brand:
        parts.append(brand.strip())
    return ". ".join(part for part in parts if part)


def user_context(
    recent_titles_newest_first: Sequence[str],
    *,
    query: str | None = None,
    count_tokens: Callable[[str], int] = lambda text: len(text.split()),
    token_budget: int = 96,
) -> str:
    """Recent titles newest first, stopping before the budget is exceeded (the newest always fits)."""
    pieces: list[str] = []
    used = 0
    if query:
        pieces.append(f"search: {query.strip()}")
        used += count_tokens(pieces[0])
    for title in recent_titles_newest_first:
        cost = count_tokens(title)
        if pieces and used + cost > token_budget:
            break
        pieces.append(title.strip())
        used += cost
    return SEPARATOR.join(pieces)
