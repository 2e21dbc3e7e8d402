"""The API's routers: thin; each parses, calls one use case and shapes the answer."""
