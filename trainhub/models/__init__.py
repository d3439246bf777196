"""Registered models (Azure ML's ``Model``): versioned files taken from a run or a client."""
