"""The demo and the Fly-shaped load generator: sample text, the Fly message, generation, publishing, loopback servers."""
