"""The one error map (infrastructure/api/errors.py) names every DomainError: none falls through to a default."""

import importlib
import pkgutil

import application
import domain
from domain.errors import DomainError
from infrastructure.api.errors import DOMAIN_STATUS


def every_subclass(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *every_subclass(sub)]
    return found


def test_every_domain_error_has_an_explicit_http_status() -> None:
    for package in (domain, application):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    errors = [DomainError, *every_subclass(DomainError)]
    assert len(errors) > 20
    missing = [f"{e.__module__}.{e.__name__} ({e.code})" for e in errors if e.code not in DOMAIN_STATUS]
    assert missing == []


def test_every_code_is_distinct_and_every_status_an_error() -> None:
    errors = [DomainError, *every_subclass(DomainError)]
    codes = [e.code for e in errors]
    assert len(codes) == len(set(codes))
    assert set(DOMAIN_STATUS) == set(codes), "the map names a code no error has"
    assert all(400 <= status < 600 for status in DOMAIN_STATUS.values())
