"""The e2e scenarios share the tests' fixtures (the local cluster, namespaces, clients)."""

from tests.conftest import *  # noqa: F403
