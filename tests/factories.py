import factory
from django.contrib.auth import get_user_model

from controlplane.models import Membership, Role, Tenant


class BaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        abstract = True

    @classmethod
    def _get_manager(cls, model_class):
        # Factories write across tenants on purpose.
        return getattr(model_class, "all_tenants", model_class._default_manager)


class UserFactory(BaseFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.SelfAttribute("username")
    password = factory.django.Password("correct horse battery staple")


class TenantFactory(BaseFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.SelfAttribute("slug")


class MembershipFactory(BaseFactory):
    class Meta:
        model = Membership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER
