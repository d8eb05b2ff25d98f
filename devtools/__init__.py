"""Development tools, never installed with the product: `make demo`, the Mosquitto and
VictoriaMetrics runners, the agent with test hooks (alert storm, scripted escape), the firmware
simulator's command line and the camera clip synthesiser.

May import any qwatch package; no product package may import this one (docs/architecture.md).
"""
