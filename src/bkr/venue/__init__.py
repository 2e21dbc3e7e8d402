"""A Backpack-compatible sandbox exchange: order books, matching, ED25519-signed REST, and the
place in an order path where `X-Broker-Id` becomes attribution."""
