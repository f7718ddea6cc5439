"""What operators watch: per-addon Prometheus metrics and the alert rules built on them."""
