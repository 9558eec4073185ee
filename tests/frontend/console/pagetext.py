"""Reading a page as a person does, for assertions on what it says."""

import html
import re


def visible(page: str) -> str:
    """The page's text: no tags, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
