"""The search index over stored traces: written after the fact, read by trace search.

index.py is the write side, run by the `tracing.index_spans` task (and
`manage.py index_traces`); fulltext.py is the read side, the full-text match that
tracing/query/traces.py joins into the trace list, and attributes.py the attribute
filters' (the trace list's, an erasure's).
"""
