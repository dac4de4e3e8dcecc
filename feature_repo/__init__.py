"""Feast feature repositories, one folder (and one Feast project) per use case: ``feature_repo/<use case>/``.

Each holds entities, sources, feature views and feature services, and the ``feature_store*.yaml`` the
``feast`` CLI reads; none of them imports the platform (``make lint`` checks it).
"""
