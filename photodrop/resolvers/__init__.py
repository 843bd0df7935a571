"""The one implementation of every operation; GraphQL, REST and pages only adapt to these."""
