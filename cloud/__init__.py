"""qwatch cloud package."""
