"""The service (`archiver run`): a pipeline from the NATS subscription to archived object keys."""
