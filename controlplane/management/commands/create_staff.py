"""Platform staff: people who run Flightdeck itself and use Django's admin across tenants."""

from django.core.management.base import BaseCommand

from controlplane import services


class Command(BaseCommand):
    help = "Make a platform staff user (Django's admin, every tenant); prints a new password once."

    def add_arguments(self, parser):
        parser.add_argument("email")

    def handle(self, *args, email, **options):
        user, password = services.staff_user_create(email=email)
        self.stdout.write(f"staff: {user.get_username()} may use /admin/ (every tenant)")
        if password:
            self.stdout.write(f"password: {password}")
        else:
            self.stdout.write("password: (unchanged: the user existed already)")
