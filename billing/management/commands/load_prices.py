from django.core.management.base import BaseCommand, CommandError

from billing import services
from controlplane.services import ServiceError


class Command(BaseCommand):
    help = "Load a price book file (the format of billing/prices/*.json) as a new version."

    def add_arguments(self, parser):
        parser.add_argument("file", help="path to the JSON price book")

    def handle(self, *args, file, **options):
        try:
            book = services.price_book_load_file(path=file)
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"loaded price book v{book.version}: {book.entries.count()} models")
