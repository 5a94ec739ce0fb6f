"""Webhooks (the Standard Webhooks spec): endpoints, the event-log fan-out and the delivering sender.

- `infrastructure.postgres.webhook_store.PostgresWebhookStore`: endpoints (their secrets are never read back through the API),
  deliveries (one per event and endpoint, its `webhook-id` stable) and every attempt.
- `fanout.WebhookFanout`: a tracked follower of the event log; each event of a subscribed type
  becomes one delivery per matching endpoint, written in the same transaction as the tracking row.
- `sender.WebhookSender`: a follower that claims due deliveries (one per endpoint at a time, with
  a lease, `FOR UPDATE SKIP LOCKED`), signs them with `standardwebhooks`, posts them through the
  SSRF guard and records the answer; failures are retried on the configured schedule.
"""
