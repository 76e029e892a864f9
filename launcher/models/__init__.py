"""Model descriptions: config.json reading and the offline catalog."""
