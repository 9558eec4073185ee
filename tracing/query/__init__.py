"""Reads of the trace store for people: search, the span tree, sessions.

filters.py parses what a caller asked for (API query string or UI form, the same
names), traces.py and sessions.py are the selectors, fulltext.py and index.py the two
sides of the search index (index.py runs in the `tracing.index_spans` task).
"""
