"""fr-exporter: funding-rate and liquidation-risk exporter for crypto perpetual futures."""

__version__ = "0.1.0"
