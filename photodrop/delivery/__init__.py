"""Getting staged photos to where the customer wants them: destinations and the outbox worker."""
