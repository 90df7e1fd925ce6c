"""The ``mqtt`` backend: an MQTT broker bridged to the bus, both ways.

See ``docs/backends/mqtt.md`` for the options, the events and the delivery promise.
"""

from .backend import MqttBackend
from .config import Button, HomeAssistant, MqttConfig, PublishRule, Sensor, Subscription

__all__ = ["Button", "HomeAssistant", "MqttBackend", "MqttConfig", "PublishRule", "Sensor",
           "Subscription"]
