#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A bad setting is the operator's to fix: one clear line, not a traceback.
        sys.stderr.write(f"flightdeck: configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
