"""What operators watch: Prometheus metrics across gunicorn workers, JSON logs, a log line per ended lease."""
