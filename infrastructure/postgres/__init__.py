"""PostgreSQL: the embedded server, the event store wiring, every table and every query ("where is the SQL?")."""
