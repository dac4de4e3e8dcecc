"""The fraud use case: card-fraud detection on a simulated transaction stream with late chargebacks.

Everything that knows about transactions, customers, terminals and chargebacks lives here; the
platform core (every other package under ``jobs/`` and ``serving/``) never imports it, a contract
that ``make lint`` checks (import-linter, ``[tool.importlinter]`` in ``pyproject.toml``).
"""
