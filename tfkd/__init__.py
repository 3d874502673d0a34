"""tfkd."""
