"""What a process tells its operators: OpenTelemetry traces and metrics, and structured logs."""
