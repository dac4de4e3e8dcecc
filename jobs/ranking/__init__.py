"""The recommendation / ranking use case: a simulated e-commerce home feed (world, logging policy
and oracle), its datasets and, as they land, its features, retrieval, ranker and re-ranking rules."""
