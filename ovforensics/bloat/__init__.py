"""bloat."""
