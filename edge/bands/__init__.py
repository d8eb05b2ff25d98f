"""The wristband pipeline: verify, filter, locate, apply the rules; plus the observation recorder."""
