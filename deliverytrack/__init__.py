"""deliverytrack: event-sourced message delivery tracking on Kafka."""

__version__ = "0.1.0"
