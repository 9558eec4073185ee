"""Coding agents' own telemetry (Claude Code, Codex CLI): their OTLP log records folded
into spans on the one span path, and their metrics stored as time series. See README.md."""
