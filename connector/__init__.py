"""shopimind-connector: sync an in-house shop's SQL database into ShopiMind."""

__version__ = "0.1.0"
