"""The API's JSON parser: DRF's, less the 500 that deep nesting caused."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # json.loads recurses once per level: "[" * 5000 exhausts the stack, which
            # DRF's parser (catching only ValueError) answered with a 500.
            raise ParseError("JSON parse error - nested too deeply") from None
