"""The archive format that readers depend on: schema, layout and keys, message rebuild, the supersede rule."""
