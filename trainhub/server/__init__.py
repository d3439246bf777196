"""The HTTP server: litestar app factory, auth, API controllers."""
