"""Reads of the trace store for people: search, the span tree, sessions.

filters.py parses what a caller asked for (API query string or UI form, the same
names); traces.py and sessions.py are the selectors. The search index they read is
written by tracing/search/index.py.
"""
