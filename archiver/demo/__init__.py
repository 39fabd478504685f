"""The demo and the Fly-shaped load generator: sample text, generation, publishing."""
