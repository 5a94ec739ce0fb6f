"""The audit outside PostgreSQL: the checks of a history and a read model, checkpoint keys, exports."""
