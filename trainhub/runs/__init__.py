"""A run's lifecycle: submission, launching, artifacts."""
