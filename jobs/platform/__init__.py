"""The platform core: everything generic (ingestion, storage, Spark, Feast plumbing, training and the
registry, evaluation and the gate, batch scoring, monitoring, A/B analysis, services). It never
imports a use case (``jobs/<use case>/``); it finds them through :mod:`jobs.platform.use_case`."""
