"""qwatch firmware_interface package."""
