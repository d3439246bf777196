"""Datasets: named, versioned selections of a datastore's files (Azure ML's ``FileDataset`` and
``TabularDataset``), what runs get of them, and which runs read or wrote them."""
