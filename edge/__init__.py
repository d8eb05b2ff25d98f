"""qwatch edge package."""
