"""Both test trees (tests/, e2e/) share one set of fixtures, from the testkit package."""

pytest_plugins = ["testkit.fixtures"]
